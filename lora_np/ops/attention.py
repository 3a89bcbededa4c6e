"""Fused causal scaled-dot-product attention: one forward, one hand-written backward.

Forward (per batch and head; q, k, v are (T, d)):
    S = q kᵀ / √d + M           M = -∞ above the diagonal (a query never sees later keys)
    P = softmax(S)  (rows)      Y = P v
Backward, from G = dL/dY:
    dL/dv = Pᵀ G                dL/dP = G vᵀ
    dL/dS = P · (dL/dP - rowsum(dL/dP · P))          (the softmax Jacobian-vector product)
    dL/dq = dL/dS k / √d        dL/dk = (dL/dS)ᵀ q / √d
Masked entries have P = 0, so their dL/dS is 0 too: the mask needs no backward of its own.
Written as one op, the only saved activation is P; composed from matmul, mul, add and softmax it
would save four (T, T) arrays per head and run seven backward closures.
"""

import math

from .. import backend
from ..autograd import Tensor
from .dropout import check_probability, dropout_mask
from .softmax import softmax_array, softmax_backward_array

_mask_cache = {}


def causal_mask(t_q, t_k, dtype):
    """(t_q, t_k) additive mask: 0 where query i may see key j (j ≤ i + t_k - t_q), -∞ elsewhere.

    With t_q < t_k the queries are the *last* t_q positions (a KV cache during generation).
    """
    key = (t_q, t_k, str(dtype), backend.get_backend())
    if key not in _mask_cache:
        xp = backend.xp
        _mask_cache[key] = xp.triu(xp.full((t_q, t_k), -xp.inf, dtype=dtype), k=1 + t_k - t_q)
    return _mask_cache[key]


def sdpa_forward(q, k, v, causal=True, dropout_p=0.0):
    """Plain arrays (..., T, d) -> (Y, P, keep-mask or None)."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    s = q @ k.swapaxes(-1, -2)
    s *= scale
    if causal:
        s += causal_mask(q.shape[-2], k.shape[-2], s.dtype)
    p = softmax_array(s, axis=-1, out=s)
    keep = None
    if dropout_p > 0.0:
        keep = dropout_mask(p.shape, dropout_p)
        y = (p * keep) @ v
        y *= 1.0 / (1.0 - dropout_p)
    else:
        y = p @ v
    return y, p, keep


def sdpa_backward(g, q, k, v, p, keep=None, dropout_p=0.0, need=(True, True, True)):
    """Plain-array backward: (dq, dk, dv) from g = dL/dY (see the module docstring)."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    dropped = p
    if keep is not None:
        dropped = p * keep
        dropped *= 1.0 / (1.0 - dropout_p)
    dv = dropped.swapaxes(-1, -2) @ g if need[2] else None
    dp = g @ v.swapaxes(-1, -2)
    if keep is not None:
        dp *= keep
        dp *= 1.0 / (1.0 - dropout_p)
    ds = softmax_backward_array(dp, p, axis=-1)
    ds *= scale
    dq = ds @ k if need[0] else None
    dk = ds.swapaxes(-1, -2) @ q if need[1] else None
    return dq, dk, dv


def scaled_dot_product_attention(q, k, v, causal=True, dropout_p=0.0, training=True):
    """Y = softmax(q kᵀ/√d + M) v over the last two axes of (..., T, d) tensors; backward fused."""
    if not (q.shape[:-2] == k.shape[:-2] == v.shape[:-2] and q.shape[-1] == k.shape[-1]
            and k.shape[-2] == v.shape[-2]):
        raise ValueError(f"attention: q, k, v shapes {q.shape}, {k.shape}, {v.shape} do not fit "
                         f"(need (..., Tq, d), (..., Tk, d), (..., Tk, dv))")
    dropout_p = check_probability(dropout_p) if training else 0.0
    qd, kd, vd = q.data, k.data, v.data
    y, p, keep = sdpa_forward(qd, kd, vd, causal, dropout_p)
    need = (q.requires_grad, k.requires_grad, v.requires_grad)

    def backward(g):
        return sdpa_backward(g, qd, kd, vd, p, keep, dropout_p, need)

    return Tensor._from_op(y, (q, k, v), backward)


def split_heads(qkv, n_head):
    """(B, T, 3C) -> q, k, v views of shape (B, H, T, C/H), no copy."""
    b, t, c3 = qkv.shape
    c = c3 // 3
    heads = qkv.reshape(b, t, 3, n_head, c // n_head).transpose(2, 0, 3, 1, 4)
    return heads[0], heads[1], heads[2]


def merge_heads(y):
    """(B, H, T, d) -> (B, T, H·d), contiguous."""
    b, h, t, d = y.shape
    return y.transpose(0, 2, 1, 3).reshape(b, t, h * d)


def causal_self_attention(qkv, n_head, dropout_p=0.0, training=True):
    """GPT-2's attention core: (B, T, 3C) packed q|k|v -> (B, T, C), heads split and merged inside.

    The backward writes dq, dk, dv straight into one (B, T, 3C) gradient, the layout of ``c_attn``'s
    output, so no split/transpose/concatenate ops (and their copies) appear in the graph.
    """
    b, t, c3 = qkv.shape
    if c3 % 3 or (c3 // 3) % n_head:
        raise ValueError(f"causal_self_attention: last axis {c3} must be 3·C with C divisible by n_head={n_head}")
    dropout_p = check_probability(dropout_p) if training else 0.0
    q, k, v = split_heads(qkv.data, n_head)
    y, p, keep = sdpa_forward(q, k, v, True, dropout_p)
    shape, dtype = qkv.shape, qkv.dtype

    def backward(g):
        g_heads = g.reshape(b, t, n_head, -1).transpose(0, 2, 1, 3)
        dqkv = backend.xp.empty(shape, dtype=dtype)
        dq, dk, dv = split_heads(dqkv, n_head)
        dq[...], dk[...], dv[...] = sdpa_backward(g_heads, q, k, v, p, keep, dropout_p)
        return (dqkv,)

    return Tensor._from_op(merge_heads(y), (qkv,), backward)
