"""A GPT-2 you can read top to bottom, with Hugging Face's parameter names, shapes and numerics.

    x = wte[idx] + wpe[pos]
    for each block:  x = x + attn(ln_1(x));  x = x + mlp(ln_2(x))
    logits = ln_f(x) wteᵀ                        (the LM head is tied to the token embedding)

``transformer.h.0.attn.c_attn.weight`` has shape (n_embd, 3·n_embd) here and in a checkpoint: GPT-2's
Conv1D stores (in, out), as every lora_np ``Linear`` does (the package docstring says why).
Generation passes a ``KVCache`` (cache.py) down the same forward: ``hidden_states(idx, cache=cache)``.
"""

from dataclasses import asdict, dataclass

import numpy as np

from .. import backend, ops
from ..autograd import Tensor, is_grad_enabled
from ..checks import check_int, check_probability
from ..nn import Dropout, Embedding, LayerNorm, Linear, Module, ModuleDict, ModuleList
from ..ops.attention import heads_view, split_heads
from ..ops.index_arrays import check_token_batch
from .cache import attend, check_cache_positions
from .generation import generate


@dataclass
class GPTConfig:
    vocab_size: int = 50257
    block_size: int = 1024
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            check_int(f"GPTConfig.{name}", getattr(self, name), min=1)
        if self.n_embd % self.n_head:
            raise ValueError(f"GPTConfig: n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        check_probability("GPTConfig.dropout", self.dropout)

    def to_dict(self):
        return asdict(self)


def _stds(config, empty):
    """(std of the Linear weights, std of the residual projections c_proj: 0.02/√(2·n_layer), GPT-2's
    scaled init); both None for ``empty`` (allocated, not drawn: a loader fills them)."""
    return (None, None) if empty else (0.02, 0.02 / np.sqrt(2 * config.n_layer))


class CausalSelfAttention(Module):
    def __init__(self, config, dtype, layer_idx=0, empty=False):
        super().__init__()
        std, proj_std = _stds(config, empty)
        self.n_head, self.dropout, self.layer_idx = config.n_head, config.dropout, layer_idx
        self.c_attn = Linear(config.n_embd, 3 * config.n_embd, bias=config.bias, std=std, dtype=dtype)
        self.c_proj = Linear(config.n_embd, config.n_embd, bias=config.bias, std=proj_std, dtype=dtype)
        self.resid_dropout = Dropout(config.dropout)

    def forward(self, x, cache=None):
        qkv = self.c_attn(x)  # (B, T, 3C)
        if cache is None:
            y = ops.causal_self_attention(qkv, self.n_head, self.dropout, self.training)
        else:  # generation: this layer's keys and values join the cache, the queries attend over all of them
            q, k, v = split_heads(qkv.data, self.n_head)
            keys, values = cache.update(k, v, self.layer_idx)
            y = backend.xp.empty(x.shape, dtype=x.dtype)  # each head written straight into the merged layout
            attend(q, keys, values, y=heads_view(y, self.n_head))
            y = Tensor(y)
        return self.resid_dropout(self.c_proj(y))


class MLP(Module):
    def __init__(self, config, dtype, empty=False):
        super().__init__()
        std, proj_std = _stds(config, empty)
        self.c_fc = Linear(config.n_embd, 4 * config.n_embd, bias=config.bias, std=std, dtype=dtype)
        self.c_proj = Linear(4 * config.n_embd, config.n_embd, bias=config.bias, std=proj_std, dtype=dtype)
        self.dropout = Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(ops.gelu(self.c_fc(x))))


class Block(Module):
    supports_gradient_checkpointing = True  # model.gradient_checkpointing_enable() recomputes it (nn/checkpointing.py)

    def __init__(self, config, dtype, layer_idx=0, empty=False):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias, dtype=dtype)
        self.attn = CausalSelfAttention(config, dtype, layer_idx, empty)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias, dtype=dtype)
        self.mlp = MLP(config, dtype, empty)

    def forward(self, x, cache=None):
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.mlp(self.ln_2(x))


class GPT(Module):
    """``logits, loss = model(idx, targets=None)``; ``model.generate(idx, max_new_tokens)``.

    ``empty=True`` allocates the weights without drawing them, for a loader that fills every one."""

    attention_windows = {}  # no sliding-window layers: every layer attends over the whole context
    logit_softcap = None    # the logits are not soft-capped (Gemma's final_logit_softcapping)

    def __init__(self, config, dtype=np.float32, empty=False):
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"GPT needs a GPTConfig; got {type(config).__name__}")
        self.config, std = config, None if empty else 0.02
        self.transformer = ModuleDict(dict(
            wte=Embedding(config.vocab_size, config.n_embd, std=std, dtype=dtype),
            wpe=Embedding(config.block_size, config.n_embd, std=std, dtype=dtype),
            drop=Dropout(config.dropout),
            h=ModuleList(Block(config, dtype, i, empty) for i in range(config.n_layer)),
            ln_f=LayerNorm(config.n_embd, bias=config.bias, dtype=dtype),
        ))

    @property
    def dtype(self):
        return self.transformer.wte.weight.dtype

    @property
    def context_length(self):
        return self.config.block_size

    @property
    def head_weight(self):
        """The (V, C) output weight: the token embedding (tied)."""
        return self.transformer.wte.weight

    def _check_idx(self, idx):
        return check_token_batch(idx, self.config.block_size, "block_size", self.config.vocab_size)

    def hidden_states(self, idx, cache=None):
        """The final-layer-norm output (B, T, C) for token ids (B, T). With a ``KVCache`` (generation,
        under no_grad) the ids are the positions after the cache's and attention reads it too."""
        ids = self._check_idx(idx)
        start = check_cache_positions(cache, ids.shape[1], self.config.block_size, "block_size")
        tr = self.transformer
        x = tr.drop(tr.wte(ids) + tr.wpe.weight[start:start + ids.shape[1]])  # positions: a slice of wpe
        for block in tr.h:
            x = block(x, cache)
        return tr.ln_f(x)

    def forward(self, idx, targets=None):
        """``(logits, loss)``: logits (B, T, V) and, given targets, the mean cross-entropy.

        To train (targets given, grad mode on) the loss comes from the fused, chunked LM head
        (``ops.lm_head_loss``), which never forms the (B, T, V) logits, and ``logits`` is None;
        call ``model(idx)`` for them. Under ``no_grad`` both are returned (evaluation wants both).
        """
        x = self.hidden_states(idx)
        if targets is not None and is_grad_enabled():
            return None, ops.lm_head_loss(x, self.head_weight, targets)
        logits = ops.lm_head(x, self.head_weight)  # tied LM head: (B, T, V)
        loss = None if targets is None else ops.cross_entropy(logits, targets)
        return logits, loss

    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, stop_token_ids=None):
        """Continue each row of ``idx`` by ``max_new_tokens`` sampled tokens, stopping early once
        every row has produced one of ``stop_token_ids`` (generation.py)."""
        return generate(self, idx, max_new_tokens, temperature=temperature, top_k=top_k,
                        stop_token_ids=stop_token_ids)

    def extra_repr(self):
        c = self.config
        return (f"n_layer={c.n_layer}, n_head={c.n_head}, n_embd={c.n_embd}, vocab_size={c.vocab_size}, "
                f"block_size={c.block_size}")
