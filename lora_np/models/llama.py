"""One decoder for the Llama family: Llama 3.2, SmolLM2, Qwen2/Qwen2.5 and Qwen3 are config switches.

GPT-2 (gpt2.py), changed one piece at a time, as in rasbt's LLMs-from-scratch:

    x = embed_tokens[idx]                                       no learned positions: RoPE, in attention
    for each layer:
        x = x + o_proj(attn(rope(q), rope(k), v))               of input_layernorm(x) (RMSNorm, not LayerNorm)
        x = x + down_proj(silu(gate_proj(h)) ⊙ up_proj(h))      h = post_attention_layernorm(x) (SwiGLU, not GELU)
    logits = norm(x) lm_headᵀ                                   lm_head tied to embed_tokens or its own (V, C)

    attention: q has H heads, k and v have H_kv (grouped-query attention, H a multiple of H_kv);
    the head size d may differ from C/H (Qwen3's head_dim); Qwen2 adds biases to q, k, v; Qwen3
    RMS-normalises each q and k head (q_norm, k_norm) before the rotation. No biases elsewhere.

Parameter names are Hugging Face's (``model.layers.0.self_attn.q_proj.weight``), so checkpoints
and PEFT adapter files map one to one; every ``Linear`` weight is stored (in, out), the transpose of
Hugging Face's nn.Linear (the package docstring says why). The LM head weight is (V, C) like the
embedding, and runs through the fused chunked head (``ops.lm_head_loss``). Generation passes a
``KVCache`` (cache.py) down the same forward: ``hidden_states(idx, cache=cache)``.
"""

from dataclasses import asdict, dataclass, field

import numpy as np

from .. import backend, ops
from ..autograd import Parameter, Tensor, is_grad_enabled
from ..checks import check_int, check_number, check_probability
from ..nn import Embedding, Linear, Module, ModuleDict, ModuleList, RMSNorm, init
from ..ops.attention import heads_view
from ..ops.index_arrays import check_token_batch
from ..ops.rope import ROPE_TYPES, rope_inv_freq, rope_tables
from .cache import attend, check_cache_positions
from .generation import generate

MODEL_TYPES = ("llama", "qwen2", "qwen3")  # config.json's model_type of the family's members
LLAMA3_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")


@dataclass
class LlamaConfig:
    """The sizes and switches of one decoder; field names as in Hugging Face's config.json.

    ``head_dim``: None means hidden_size // num_attention_heads. ``rope_scaling``: None or
    {"rope_type": "llama3", "factor", "low_freq_factor", "high_freq_factor",
    "original_max_position_embeddings"}. ``qkv_bias``: biases on q, k, v (Qwen2; Llama's
    attention_bias sets it and ``o_bias``). ``qk_norm``: Qwen3's per-head RMSNorm of q and k."""

    vocab_size: int = 49152
    hidden_size: int = 576
    intermediate_size: int = 1536
    num_hidden_layers: int = 30
    num_attention_heads: int = 9
    num_key_value_heads: int = 3
    head_dim: int = None
    max_position_embeddings: int = 8192
    rms_norm_eps: float = 1e-5
    rope_theta: float = 100000.0
    rope_scaling: dict = None
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    tie_word_embeddings: bool = True
    attention_dropout: float = 0.0
    model_type: str = "llama"
    extra: dict = field(default_factory=dict)  # other config.json fields, written back on save

    def __post_init__(self):
        self.check_sizes()
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"LlamaConfig.model_type must be one of {list(MODEL_TYPES)}; got {self.model_type!r}")
        self.rope_scaling = check_rope_scaling(self.rope_scaling)

    def check_sizes(self):
        """The sizes every member of the family checks (Gemma 3's config too); head_dim filled in."""
        name_of = type(self).__name__
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads", "max_position_embeddings"):
            check_int(f"{name_of}.{name}", getattr(self, name), min=1)
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"{name_of}: num_attention_heads={self.num_attention_heads} must be a multiple of "
                             f"num_key_value_heads={self.num_key_value_heads} (grouped-query attention)")
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        check_int(f"{name_of}.head_dim", self.head_dim, min=2)
        if self.head_dim % 2:
            raise ValueError(f"{name_of}: head_dim={self.head_dim} must be even (RoPE rotates pairs)")
        check_number(f"{name_of}.rms_norm_eps", self.rms_norm_eps, min=0, min_open=True)
        check_number(f"{name_of}.rope_theta", self.rope_theta, min=0, min_open=True)
        check_probability(f"{name_of}.attention_dropout", self.attention_dropout)

    def to_dict(self):
        return asdict(self)


def check_rope_scaling(scaling):
    """None for plain RoPE, or a llama3 dict with its four numbers; any other type is refused."""
    if scaling is None or scaling.get("rope_type", scaling.get("type", "default")) == "default":
        return None
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind not in ROPE_TYPES:
        raise ValueError(f"rope_scaling type {kind!r} is not supported; lora_np implements {list(ROPE_TYPES)}")
    missing = [k for k in LLAMA3_KEYS if k not in scaling]
    if missing:
        raise ValueError(f"rope_scaling of type 'llama3' needs {list(LLAMA3_KEYS)}; missing {missing}")
    for key in LLAMA3_KEYS:
        check_number(f"rope_scaling.{key}", scaling[key], min=0, min_open=True)
    if not scaling["high_freq_factor"] > scaling["low_freq_factor"]:
        raise ValueError("rope_scaling: high_freq_factor must exceed low_freq_factor")
    return {"rope_type": "llama3", **{k: scaling[k] for k in LLAMA3_KEYS}}


class LlamaAttention(Module):
    """Grouped-query self-attention with RoPE (and Qwen2's q/k/v biases, Qwen3's q/k norms).

    Switches a subclass sets (Gemma 3, gemma3.py): ``norm_class`` of the q/k norms; ``window``, a
    sliding window of keys (None: the whole causal context)."""

    norm_class = RMSNorm
    window = None

    def __init__(self, config, dtype, std=0.02, layer_idx=0):
        super().__init__()
        c, d = config, config.head_dim
        self.n_head, self.n_kv_head, self.head_dim, self.dropout = (c.num_attention_heads, c.num_key_value_heads,
                                                                    d, c.attention_dropout)
        self.layer_idx = layer_idx
        self.q_proj = Linear(c.hidden_size, c.num_attention_heads * d, bias=c.qkv_bias, std=std, dtype=dtype)
        self.k_proj = Linear(c.hidden_size, c.num_key_value_heads * d, bias=c.qkv_bias, std=std, dtype=dtype)
        self.v_proj = Linear(c.hidden_size, c.num_key_value_heads * d, bias=c.qkv_bias, std=std, dtype=dtype)
        self.o_proj = Linear(c.num_attention_heads * d, c.hidden_size, bias=c.o_bias, std=std, dtype=dtype)
        self.q_norm = self.norm_class(d, c.rms_norm_eps, dtype=dtype) if c.qk_norm else None  # Qwen3, Gemma 3
        self.k_norm = self.norm_class(d, c.rms_norm_eps, dtype=dtype) if c.qk_norm else None

    def rotated_qkv(self, x, cos, sin):
        """(B, T, C) -> q (B, T, H, d), k (B, T, H_kv, d) rotated by RoPE, v (B, T, H_kv, d): heads on the
        third axis, as the projections make them (``attention`` moves them first)."""
        b, t, _ = x.shape
        q = self.q_proj(x).reshape(b, t, self.n_head, self.head_dim)
        k = self.k_proj(x).reshape(b, t, self.n_kv_head, self.head_dim)
        v = self.v_proj(x).reshape(b, t, self.n_kv_head, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        cos, sin = cos[:, None, :], sin[:, None, :]  # (T, 1, d/2): broadcast over the heads
        return ops.rope(q, cos, sin), ops.rope(k, cos, sin), v

    def attention(self, q, k, v, cache=None):
        """softmax(q kᵀ/√d + M) v over the causal context (or the layer's window), or over the cache, for
        q, k, v (B, T, heads, d); the heads merged: (B, T, H·d). With a cache (generation, no graph) the
        arrays' heads are swapped by views and each head's output is written straight into the merged layout."""
        b, t, _, d = q.shape
        if cache is None:
            y = ops.scaled_dot_product_attention(q.swapaxes(1, 2), k.swapaxes(1, 2), v.swapaxes(1, 2), True,
                                                 self.dropout, self.training, window=self.window)
            return y.swapaxes(1, 2).reshape(b, t, self.n_head * d)
        keys, values = cache.update(k.data.swapaxes(1, 2), v.data.swapaxes(1, 2), self.layer_idx)
        y = backend.xp.empty((b, t, self.n_head * d), dtype=q.dtype)
        attend(q.data.swapaxes(1, 2), keys, values, y=heads_view(y, self.n_head), window=self.window)
        return Tensor._wrap(y)

    def forward(self, x, cos, sin, cache=None):
        return self.o_proj(self.attention(*self.rotated_qkv(x, cos, sin), cache))


class LlamaMLP(Module):
    """SwiGLU: down_proj(silu(gate_proj(x)) ⊙ up_proj(x)). ``glu``: the gate's op (Gemma 3: GeGLU)."""

    glu = staticmethod(ops.swiglu)

    def __init__(self, config, dtype, std=0.02):
        super().__init__()
        c = config
        self.gate_proj = Linear(c.hidden_size, c.intermediate_size, bias=c.mlp_bias, std=std, dtype=dtype)
        self.up_proj = Linear(c.hidden_size, c.intermediate_size, bias=c.mlp_bias, std=std, dtype=dtype)
        self.down_proj = Linear(c.intermediate_size, c.hidden_size, bias=c.mlp_bias, std=std, dtype=dtype)

    def forward(self, x):
        return self.down_proj(self.glu(self.gate_proj(x), self.up_proj(x)))


class LlamaDecoderLayer(Module):
    """x + attn(input_layernorm(x)), then + mlp(post_attention_layernorm(x)): pre-norm, as GPT-2's Block."""

    supports_gradient_checkpointing = True
    attention_class, mlp_class, norm_class = LlamaAttention, LlamaMLP, RMSNorm  # switches of a subclass

    def __init__(self, config, dtype, std=0.02, layer_idx=0):
        super().__init__()
        self.input_layernorm = self.norm_class(config.hidden_size, config.rms_norm_eps, dtype=dtype)
        self.self_attn = self.attention_class(config, dtype, std, layer_idx)
        self.post_attention_layernorm = self.norm_class(config.hidden_size, config.rms_norm_eps, dtype=dtype)
        self.mlp = self.mlp_class(config, dtype, std)

    def forward(self, x, cos, sin, cache=None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class LMHead(Module):
    """An untied output layer: ``weight`` (vocab_size, hidden_size), Hugging Face's lm_head.weight.
    Not a Linear: the fused head reads the weight directly, and LoRA's "all-linear" leaves it out."""

    def __init__(self, vocab_size, hidden_size, dtype, std=0.02):
        super().__init__()
        self.weight = Parameter(init.normal((vocab_size, hidden_size), std, dtype))


class Llama(Module):
    """``logits, loss = model(idx, targets=None)``; ``model.generate(idx, max_new_tokens)``: GPT's interface.

    Weights start as N(0, 0.02²) draws (norms at 1, biases at 0); ``empty=True`` allocates them
    without drawing, for a loader that fills every one (``load_model``)."""

    attention_windows = {}  # no sliding-window layers: every layer attends over the whole context
    logit_softcap = None    # no soft-capping of the logits (Gemma's final_logit_softcapping)
    config_class, layer_class, norm_class = LlamaConfig, LlamaDecoderLayer, RMSNorm  # switches of a subclass

    def __init__(self, config, dtype=np.float32, empty=False):
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}; got {type(config).__name__}")
        self.config, std = config, None if empty else 0.02
        self.model = ModuleDict(dict(
            embed_tokens=Embedding(config.vocab_size, config.hidden_size, std=std, dtype=dtype),
            layers=ModuleList(self.layer_class(config, dtype, std, i) for i in range(config.num_hidden_layers)),
            norm=self.norm_class(config.hidden_size, config.rms_norm_eps, dtype=dtype),
        ))
        if not config.tie_word_embeddings:
            self.lm_head = LMHead(config.vocab_size, config.hidden_size, dtype, std)
        self.inv_freq = self.rope_frequencies()

    @property
    def dtype(self):
        return self.model.embed_tokens.weight.dtype

    @property
    def context_length(self):
        return self.config.max_position_embeddings

    @property
    def head_weight(self):
        """The (V, C) output weight: lm_head's, or the embedding's when they are tied."""
        return self.model.embed_tokens.weight if self.config.tie_word_embeddings else self.lm_head.weight

    def rope_frequencies(self):
        """RoPE's fᵢ (d/2,) float32, one set for every layer."""
        c = self.config
        return rope_inv_freq(c.head_dim, c.rope_theta, c.rope_scaling)

    def layer_rope_tables(self, start, end):
        """(cos, sin) of positions start..end-1 for each layer: here one table, shared by all."""
        return [rope_tables(self.inv_freq, start, end, self.dtype)] * self.config.num_hidden_layers

    def embed(self, ids):
        """The residual stream's start (B, T, C): the embedding rows of the ids."""
        return self.model.embed_tokens(ids)

    def _check_idx(self, idx):
        c = self.config
        return check_token_batch(idx, c.max_position_embeddings, "max_position_embeddings", c.vocab_size)

    def hidden_states(self, idx, cache=None):
        """The final-norm output (B, T, C) for token ids (B, T). With a ``KVCache`` (generation, under
        no_grad) the ids are the positions after the cache's and attention reads it too."""
        ids = self._check_idx(idx)
        start = check_cache_positions(cache, ids.shape[1], self.context_length, "max_position_embeddings")
        tables = self.layer_rope_tables(start, start + ids.shape[1])
        x = self.embed(ids)
        for layer, (cos, sin) in zip(self.model.layers, tables):
            x = layer(x, cos, sin, cache)
        return self.model.norm(x)

    def forward(self, idx, targets=None):
        """``(logits, loss)`` as GPT.forward: training (targets, grad mode) gives (None, loss) from
        the fused chunked head, which never forms the (B, T, V) logits (unless the logits are soft-capped)."""
        x = self.hidden_states(idx)
        if targets is not None and is_grad_enabled() and self.logit_softcap is None:
            return None, ops.lm_head_loss(x, self.head_weight, targets)
        logits = ops.lm_head(x, self.head_weight)  # (B, T, V)
        if self.logit_softcap is not None:  # Gemma: cap·tanh(logits/cap)
            logits = ops.softcap(logits, self.logit_softcap)
        loss = None if targets is None else ops.cross_entropy(logits, targets)
        return logits, loss

    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, stop_token_ids=None):
        """Continue each row of ``idx`` by ``max_new_tokens`` tokens, with a key/value cache; stop
        early once every row has produced one of ``stop_token_ids`` (generation.py)."""
        return generate(self, idx, max_new_tokens, temperature=temperature, top_k=top_k,
                        stop_token_ids=stop_token_ids)

    def extra_repr(self):
        c = self.config
        return (f"model_type={c.model_type}, layers={c.num_hidden_layers}, hidden={c.hidden_size}, "
                f"heads={c.num_attention_heads}/{c.num_key_value_heads}, head_dim={c.head_dim}, vocab={c.vocab_size}")
