"""The Llama decoder layer on raw arrays, for generation: the math of ``LlamaDecoderLayer.forward``
with a ``KVCache``, without the autograd ``Tensor``s.

Under ``no_grad`` a graph op records nothing, yet each still pays for its wrapper: shape checks, a
``Tensor``, the thread pool's bookkeeping around a one-row kernel, the transposes' inverse
permutations. A decode step of SmolLM2-135M made ~730 Python calls per layer that way (~0.5 ms of a
layer's ~2 ms; benchmarks/results_llm.md). Generation needs no graph, so ``Llama.hidden_states``
with a cache runs its layers through ``decoder_layer`` below: the same kernels the ops call
(``rms_norm_kernel``, ``rope_kernel``, ``swiglu_kernel``, the cache's ``attend``), on arrays, in
the order of the layer's forward:

    h = input_layernorm(x);  q, k, v = q_proj(h), k_proj(h), v_proj(h)   (Qwen3: q_norm, k_norm per head)
    x = x + o_proj(attend(rope(q), cache.update(rope(k), v)))
    h = post_attention_layernorm(x);  x = x + down_proj(silu(gate_proj(h)) ⊙ up_proj(h))

A plain ``Linear`` is one BLAS call here; any other projection (a LoRA layer, a bf16 or 4-bit base)
runs through its own forward (``linear``), so adapters and quantized bases decode unchanged.
tests/test_llama_arrays.py holds it equal to the graph forward.
"""

from .. import backend, parallel
from ..autograd import Tensor
from ..nn import Linear
from ..ops.rms_norm import rms_norm_kernel
from ..ops.rope import rope_kernel
from ..ops.swiglu import swiglu_kernel
from .cache import attend


def linear(layer, x):
    """y = x W + b for rows x (N, in): a plain ``Linear`` as one BLAS call (split over the threads
    when ``parallel.gemm_split`` says so: a long prefill), any other layer through its own forward."""
    if type(layer) is not Linear:
        return layer(Tensor(x)).data
    w = layer.weight.data
    y = x @ w if parallel.gemm_split(x.shape[0], w.shape[0], w.shape[1]) is None else parallel.matmul(x, w)
    if layer.bias is not None:
        y += layer.bias.data
    return y


def rms_norm(norm, x):
    """RMSNorm of the rows of x (N, C): the fused op's kernel, x̂ written into y (nothing kept)."""
    y = backend.xp.empty_like(x)
    rms_norm_kernel(y, y, backend.xp.empty((x.shape[0], 1), dtype=x.dtype), x, norm.weight.data, norm.eps)
    return y


def rope(x, cos, sin):
    """RoPE of x (N, T, H, d) at the positions of cos, sin (T, 1, d/2)."""
    y = backend.xp.empty_like(x)
    rope_kernel(y, x, cos, sin)
    return y


def attention(attn, h, shape, cos, sin, cache):
    """o_proj of the attention over the cache, for the normed rows h (B·T, C) of a (B, T) block."""
    (b, t), d = shape, attn.head_dim
    q = linear(attn.q_proj, h).reshape(b * t * attn.n_head, d)
    k = linear(attn.k_proj, h).reshape(b * t * attn.n_kv_head, d)
    v = linear(attn.v_proj, h).reshape(b, t, attn.n_kv_head, d)
    if attn.q_norm is not None:  # Qwen3: RMSNorm of each head vector
        q, k = rms_norm(attn.q_norm, q), rms_norm(attn.k_norm, k)
    cos, sin = cos[:, None, :], sin[:, None, :]  # (T, 1, d/2): broadcast over the heads
    q = rope(q.reshape(b, t, attn.n_head, d), cos, sin)
    k = rope(k.reshape(b, t, attn.n_kv_head, d), cos, sin)
    keys, values = cache.update(k.swapaxes(1, 2), v.swapaxes(1, 2), attn.layer_idx)
    y = backend.xp.empty((b, t, attn.n_head * d), dtype=h.dtype)
    attend(q.swapaxes(1, 2), keys, values, y=y.reshape(b, t, attn.n_head, d).swapaxes(1, 2), window=attn.window)
    return linear(attn.o_proj, y.reshape(b * t, -1))


def mlp(block, h):
    """down_proj(silu(gate_proj(h)) ⊙ up_proj(h)) for rows h (N, C)."""
    gate, up = linear(block.gate_proj, h), linear(block.up_proj, h)
    out = backend.xp.empty_like(gate)
    swiglu_kernel(out, gate, up)
    return linear(block.down_proj, out)


def decoder_layer(layer, x, cos, sin, cache):
    """One ``LlamaDecoderLayer`` on x (B, T, C) with a cache: its forward, on arrays."""
    shape, rows = x.shape[:2], x.reshape(-1, x.shape[-1])
    rows = rows + attention(layer.self_attn, rms_norm(layer.input_layernorm, rows), shape, cos, sin, cache)
    rows += mlp(layer.mlp, rms_norm(layer.post_attention_layernorm, rows))
    return rows.reshape(x.shape)


def decode_layers(layers, x, tables, cache):
    """Every ``LlamaDecoderLayer`` of ``layers`` on x (B, T, C), with its (cos, sin) of ``tables``."""
    for layer, (cos, sin) in zip(layers, tables):
        x = decoder_layer(layer, x, cos, sin, cache)
    return x
