"""Gemma 3's text decoder (Gemma3ForCausalLM, "gemma3_text"): the Llama decoder, changed one piece at a time.

Each change is a small subclass or a switch of llama.py's classes, never a copy:

1. RMSNorm scales by (1 + w), not w (``GemmaRMSNorm``): the stored weight is the offset from 1,
   so a weight of zeros is the identity scale (transformers' ``Gemma3RMSNorm``).
2. Four norms per layer, not two: each sublayer's output is normalised too before it joins the
   residual stream (post_attention_layernorm is *after* attention here, not before the MLP):

       x = x + post_attention_layernorm(attn(input_layernorm(x)))
       x = x + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(x)))

3. q/k norms, as Qwen3, with (1 + w) too: each q and k head is RMS-normalised before RoPE.
4. GeGLU, not SwiGLU: down_proj(gelu_tanh(gate_proj(h)) ⊙ up_proj(h)) (hidden_activation
   "gelu_pytorch_tanh", GPT-2's tanh GELU).
5. The embedding is scaled by √hidden_size, the scale rounded to the embedding's dtype first
   (in bfloat16 √640 = 25.298... becomes 25.25, as transformers computes it): the tied head reads
   the unscaled table, so without the scale the residual stream would start √C times smaller
   than the head expects.
6. Attention scores are scaled by query_pre_attn_scalar^-½, not head_dim^-½ (the two are equal
   for the 270M and 1B models, 256): q is multiplied by √(head_dim / query_pre_attn_scalar).
7. Sliding-window attention on the local layers: ``layer_types`` names each layer
   "sliding_attention" (query i sees keys i - W < j ≤ i, W = sliding_window) or "full_attention"
   (older configs: sliding_window_pattern 6, five local layers then one global). In generation
   the KV cache keeps only W positions of a local layer (``attention_windows``).
8. Two RoPE bases: rope_local_base_freq (10,000) on local layers, rope_theta (1,000,000) on
   global ones, and on global layers only a linear rope scaling where the config has one
   (fᵢ / factor, Gemma 3 4B and larger).
9. Soft-capping of the final logits, cap·tanh(logits/cap), where final_logit_softcapping is set
   (null for Gemma 3; Gemma 2 had 30). Soft-capped attention scores (attn_logit_softcapping) are
   refused (gemma3_spec.py): Gemma 3 sets it null.

The head is tied to the embedding (Gemma 3's 262,144-token table is most of the 270M model).
"""

import math
from dataclasses import dataclass

import numpy as np

from .. import ops
from ..autograd import Parameter
from ..checks import check_int, check_number
from ..nn import RMSNorm, init
from ..ops.rope import rope_inv_freq, rope_tables
from .llama import Llama, LlamaAttention, LlamaConfig, LlamaDecoderLayer, LlamaMLP

SLIDING, FULL = "sliding_attention", "full_attention"
ATTENTION_TYPES = (SLIDING, FULL)
MODEL_TYPE = "gemma3_text"


def pattern_layer_types(num_hidden_layers, sliding_window_pattern=6):
    """The layer types older configs imply: every ``sliding_window_pattern``-th layer global, the rest local."""
    return [SLIDING if (i + 1) % sliding_window_pattern else FULL for i in range(num_hidden_layers)]


@dataclass
class Gemma3Config(LlamaConfig):
    """LlamaConfig's sizes with Gemma 3's switches; field names as in transformers' Gemma3TextConfig.

    Defaults are Gemma 3 270M's. ``layer_types``: None means the 5 local : 1 global pattern.
    ``rope_theta``: the global layers' base; ``rope_local_base_freq``: the local layers'.
    ``rope_scaling``: None or {"rope_type": "linear", "factor": f} (global layers only).
    ``qkv_bias`` = ``o_bias``: config.json's attention_bias."""

    vocab_size: int = 262144
    hidden_size: int = 640
    intermediate_size: int = 2048
    num_hidden_layers: int = 18
    num_attention_heads: int = 4
    num_key_value_heads: int = 1
    head_dim: int = 256
    max_position_embeddings: int = 32768
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1000000.0
    qk_norm: bool = True
    model_type: str = MODEL_TYPE
    rope_local_base_freq: float = 10000.0
    sliding_window: int = 512
    layer_types: list = None
    query_pre_attn_scalar: float = 256
    final_logit_softcapping: float = None

    def __post_init__(self):
        self.check_sizes()
        if self.model_type != MODEL_TYPE or not self.qk_norm or self.mlp_bias or self.qkv_bias != self.o_bias:
            raise ValueError(f"Gemma3Config: model_type must be {MODEL_TYPE!r} with q/k norms, no MLP biases and one "
                             f"attention_bias; got model_type={self.model_type!r}, qk_norm={self.qk_norm}, "
                             f"mlp_bias={self.mlp_bias}, qkv_bias={self.qkv_bias}, o_bias={self.o_bias}")
        check_number("Gemma3Config.rope_local_base_freq", self.rope_local_base_freq, min=0, min_open=True)
        check_number("Gemma3Config.query_pre_attn_scalar", self.query_pre_attn_scalar, min=0, min_open=True)
        if self.final_logit_softcapping is not None:
            check_number("Gemma3Config.final_logit_softcapping", self.final_logit_softcapping, min=0, min_open=True)
        check_int("Gemma3Config.sliding_window", self.sliding_window, min=1)
        if self.sliding_window > self.max_position_embeddings:
            raise ValueError(f"sliding_window={self.sliding_window} is larger than the context, "
                             f"max_position_embeddings={self.max_position_embeddings}")
        self.layer_types = check_layer_types(self.layer_types, self.num_hidden_layers)
        self.rope_scaling = check_linear_scaling(self.rope_scaling)

    def window(self, layer_idx):
        """The layer's sliding window, or None for a global layer."""
        return self.sliding_window if self.layer_types[layer_idx] == SLIDING else None


def check_layer_types(layer_types, num_hidden_layers):
    """One known type per layer (None: the 5:1 pattern); a list of str is returned."""
    if layer_types is None:
        return pattern_layer_types(num_hidden_layers)
    if not isinstance(layer_types, (list, tuple)) or len(layer_types) != num_hidden_layers:
        raise ValueError(f"layer_types must list one attention type per layer ({num_hidden_layers}, "
                         f"num_hidden_layers); got {layer_types!r}")
    unknown = sorted({t for t in layer_types if t not in ATTENTION_TYPES}, key=str)
    if unknown:
        raise ValueError(f"layer_types holds unknown attention types {unknown}; known: {list(ATTENTION_TYPES)}")
    return list(layer_types)


def check_linear_scaling(scaling):
    """None for plain RoPE, or {"rope_type": "linear", "factor": f > 0}; any other type is refused."""
    if scaling is None or scaling.get("rope_type", scaling.get("type", "default")) == "default":
        return None
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind != "linear":
        raise ValueError(f"rope_scaling type {kind!r} is not supported for Gemma 3; lora_np implements "
                         f"'default' and 'linear'")
    return {"rope_type": "linear", "factor": check_number("rope_scaling.factor", scaling.get("factor"),
                                                          min=0, min_open=True)}


class GemmaRMSNorm(RMSNorm):
    """y = x / √(mean(x²) + eps) ⊙ (1 + w): the weight starts at 0 (the identity scale).
    Composed: ``ops.rms_norm`` of the weight 1 + w, so dL/dw = dL/d(1 + w)."""

    def __init__(self, normalized_shape, eps=1e-6, dtype=np.float32):
        super().__init__(normalized_shape, eps, dtype)
        self.weight = Parameter(init.zeros((normalized_shape,), dtype))

    def forward(self, x):
        return ops.rms_norm(x, 1 + self.weight, self.eps)


class Gemma3Attention(LlamaAttention):
    """Llama's attention with (1 + w) q/k norms, scores scaled by query_pre_attn_scalar^-½ and,
    on local layers, a sliding window."""

    norm_class = GemmaRMSNorm

    def __init__(self, config, dtype, std=0.02, layer_idx=0):
        super().__init__(config, dtype, std, layer_idx)
        self.window = config.window(layer_idx)
        self.q_scale = math.sqrt(config.head_dim / config.query_pre_attn_scalar)  # the kernel divides by √d

    def rotated_qkv(self, x, cos, sin):
        q, k, v = super().rotated_qkv(x, cos, sin)
        return (q if self.q_scale == 1.0 else q * self.q_scale), k, v


class Gemma3MLP(LlamaMLP):
    """GeGLU: down_proj(gelu_tanh(gate_proj(x)) ⊙ up_proj(x))."""

    glu = staticmethod(ops.geglu)


class Gemma3DecoderLayer(LlamaDecoderLayer):
    """Four norms: the attention's and the MLP's outputs are normalised before they join the stream."""

    attention_class, mlp_class, norm_class = Gemma3Attention, Gemma3MLP, GemmaRMSNorm

    def __init__(self, config, dtype, std=0.02, layer_idx=0):
        super().__init__(config, dtype, std, layer_idx)
        self.pre_feedforward_layernorm = GemmaRMSNorm(config.hidden_size, config.rms_norm_eps, dtype=dtype)
        self.post_feedforward_layernorm = GemmaRMSNorm(config.hidden_size, config.rms_norm_eps, dtype=dtype)

    def forward(self, x, cos, sin, cache=None):
        x = x + self.post_attention_layernorm(self.self_attn(self.input_layernorm(x), cos, sin, cache))
        return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))


class Gemma3(Llama):
    """Gemma3ForCausalLM: ``logits, loss = model(idx, targets=None)``, ``model.generate(...)``, as Llama."""

    config_class, layer_class, norm_class = Gemma3Config, Gemma3DecoderLayer, GemmaRMSNorm

    @property
    def attention_windows(self):
        """{layer index: window} of the local layers: the KV cache keeps only that many positions of them."""
        return {i: self.config.window(i) for i, kind in enumerate(self.config.layer_types) if kind == SLIDING}

    @property
    def logit_softcap(self):
        return self.config.final_logit_softcapping

    def rope_frequencies(self):
        """{attention type: fᵢ}: the local base on sliding layers; the global base, scaled, on full ones."""
        c = self.config
        full = rope_inv_freq(c.head_dim, c.rope_theta)
        if c.rope_scaling is not None:  # linear: every frequency slowed by the factor, as transformers (float32)
            full = full / np.float32(c.rope_scaling["factor"])
        return {SLIDING: rope_inv_freq(c.head_dim, c.rope_local_base_freq), FULL: full}

    def layer_rope_tables(self, start, end):
        tables = {kind: rope_tables(f, start, end, self.dtype) for kind, f in self.inv_freq.items()}
        return [tables[kind] for kind in self.config.layer_types]

    def embed(self, ids):
        """The embedding rows times √hidden_size, the scale first rounded to the table's dtype."""
        return self.model.embed_tokens(ids) * self.dtype.type(math.sqrt(self.config.hidden_size))

    def extra_repr(self):
        c = self.config
        local = sum(kind == SLIDING for kind in c.layer_types)
        return f"{super().extra_repr()}, local layers={local} (window {c.sliding_window})"
