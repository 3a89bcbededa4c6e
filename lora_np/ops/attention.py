"""Fused causal scaled-dot-product attention: one forward, one hand-written backward.

Forward (per batch and head; q, k, v are (T, d)):
    S = q kᵀ / √d + M           M = -∞ above the diagonal (a query never sees later keys)
    P = softmax(S)  (rows)      Y = P v
Backward, from G = dL/dY:
    dL/dv = Pᵀ G                dL/dP = G vᵀ
    dL/dS = P ⊙ (dL/dP - rowsum(dL/dP ⊙ P))          (the softmax Jacobian-vector product)
    dL/dq = dL/dS k / √d        dL/dk = (dL/dS)ᵀ q / √d
Masked entries have P = 0, so their dL/dS is 0 too: the mask needs no backward of its own.
Written as one op, the only saved (T, T) array is P. Composed from matmul, mul, add, exp, sum and
div (``ops.reference``, which writes the softmax out as e^(S - max) / Σ e^(S - max)), the forward
makes several (T, T) arrays per head and keeps most of them for the backward, and the backward
walks a closure per op. The kernels run on blocks of batch items (``parallel.for_rows``).

Grouped-query attention (Llama 3, Qwen3): q has H heads, k and v have H_kv = H / G heads, and
query head h reads key/value head h // G. The K/V heads are never repeated G times in memory:
q is viewed as (B, H_kv, G, T, d) and k, v as (B, H_kv, 1, T_k, d), so every matmul broadcasts
over the group axis; since a K/V head is shared by G query heads, its gradient is the sum of their
contributions: dL/dk = Σ_g dS_gᵀ q_g / √d, dL/dv = Σ_g P_gᵀ G_g.

Two sets of kernels compute this. The ones below keep P (B·H·T² numbers) for the backward, which
costs the least arithmetic. From FLASH_MIN_T query rows on (and without dropout) the op runs
``flash_attention.py`` instead: FlashAttention-2's blocks with an online softmax, which keep only Y
and one log-sum-exp per row and recompute P block by block in the backward (about a third more
arithmetic, O(block²) memory instead of O(T²)). FLASH_MIN_T is where the recomputation stops
costing time, measured on GPT-2 small's attention shape by ``benchmarks/bench_memory.py``
(``--switch-point``; results in ``benchmarks/results_memory.md``). With dropout the plain kernels
always run: their P and keep-mask make the backward replay the forward's mask exactly.
"""

import contextlib
import math

from .. import backend, parallel
from ..autograd import Tensor
from ..checks import check_probability
from .dropout import dropout_mask
from .flash_attention import flash_backward, flash_forward, group_product
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


QUERY_CHUNK = 64  # causal attention runs in chunks of query rows; each sees only the keys it may


def _grain(scores_per_item):
    """Batch items per block, so that each block holds about parallel.GRAIN attention scores."""
    return max(1, parallel.GRAIN // max(scores_per_item, 1))


def _query_chunks(t_q, t_k, causal):
    """(first query, end query, number of keys it needs): with a causal mask, rows [a, b) see keys
    [0, b + t_k - t_q) only, so the all-masked upper-right blocks are never computed (about a
    quarter of the work at T = 128, more at longer T)."""
    if not causal or t_q <= QUERY_CHUNK:
        return [(0, t_q, t_k)]
    return [(a, min(a + QUERY_CHUNK, t_q), min(t_k, min(a + QUERY_CHUNK, t_q) + t_k - t_q))
            for a in range(0, t_q, QUERY_CHUNK)]


def attention_kernel(y, p, keep, q, k, v, mask, chunks, keep_scale):
    """Y = P v with P = softmax(q kᵀ/√d + M), one chunk of query rows [a, b) against its keys [0, e)
    at a time; P is written into ``p`` for the backward (then dropped out by ``keep``, if given)."""
    xp = backend.xp
    scale = 1.0 / math.sqrt(q.shape[-1])
    for a, b, e in chunks:
        s = p[..., a:b, :e]
        xp.matmul(q[..., a:b, :] * scale, k[..., :e, :].swapaxes(-1, -2), out=s)   # S = (q/√d) kᵀ
        if mask is not None:
            s += mask[a:b, :e]
        softmax_array(s, axis=-1, out=s)
        if keep is not None:
            s = s * keep[..., a:b, :e] * keep_scale
        xp.matmul(s, v[..., :e, :], out=y[..., a:b, :])


def _product_into(dst, left, right, first):
    """dst = left right for the first chunk (which sees every key), dst += left right after; summed
    over the query group when ``dst`` is a K/V gradient shared by G query heads."""
    if left.shape[-3] != dst.shape[-3]:
        product = group_product(left, right)
        if first:
            dst[...] = product
        else:
            dst += product
    elif first:
        backend.xp.matmul(left, right, out=dst)
    else:
        dst += left @ right


def attention_backward_kernel(dq, dk, dv, g, q, k, v, p, keep, chunks, keep_scale):
    """(dq, dk, dv) from g = dL/dY (module docstring), chunk by chunk from the last (which sees
    every key) to the first, so dk and dv are written by the first chunk and accumulated after.
    A gradient whose buffer is None is not computed."""
    xp = backend.xp
    scale = 1.0 / math.sqrt(q.shape[-1])
    for i, (a, b, e) in enumerate(reversed(chunks)):
        probs, gb = p[..., a:b, :e], g[..., a:b, :]
        dropped = probs if keep is None else probs * keep[..., a:b, :e] * keep_scale
        if dv is not None:
            _product_into(dv[..., :e, :], dropped.swapaxes(-1, -2), gb, i == 0)        # dv = Pᵀ G
        ds = gb @ v[..., :e, :].swapaxes(-1, -2)                                       # dP = G vᵀ
        if keep is not None:
            ds *= keep[..., a:b, :e]
            ds *= keep_scale
        softmax_backward_array(ds, probs, axis=-1, out=ds)                             # dS = P ⊙ (dP - Σ dP⊙P)
        ds *= scale
        if dq is not None:
            xp.matmul(ds, k[..., :e, :], out=dq[..., a:b, :])                          # dq = dS k / √d
        if dk is not None:
            _product_into(dk[..., :e, :], ds.swapaxes(-1, -2), q[..., a:b, :], i == 0)  # dk = dSᵀ q / √d


def sdpa_forward(q, k, v, causal=True, dropout_p=0.0, y=None):
    """Plain arrays (B, ..., T, d) -> (Y, P, keep-mask or None), in blocks over the batch axis.

    ``y``, if given, is the (possibly strided) output buffer. P is kept for the backward; with a
    causal mask its entries above the diagonal blocks are never written (nor read).
    """
    xp = backend.xp
    if q.ndim == 2:  # a single (T, d) matrix: give it a batch axis of one
        y2, p2, keep2 = sdpa_forward(q[None], k[None], v[None], causal, dropout_p)
        return y2[0], p2[0], None if keep2 is None else keep2[0]
    t_q, t_k = q.shape[-2], k.shape[-2]
    p = xp.empty(q.shape[:-1] + (t_k,), dtype=q.dtype)
    y = xp.empty(q.shape[:-1] + (v.shape[-1],), dtype=q.dtype) if y is None else y
    keep = dropout_mask(p.shape, dropout_p) if dropout_p > 0.0 else None
    mask = causal_mask(t_q, t_k, q.dtype) if causal else None
    parallel.for_rows(attention_kernel, (y, p, keep, q, k, v),
                      (mask, _query_chunks(t_q, t_k, causal), 1.0 / (1.0 - dropout_p)), grain=_grain(p[0].size))
    return y, p, keep


def sdpa_backward(g, q, k, v, p, keep=None, dropout_p=0.0, need=(True, True, True), out=None, causal=True):
    """Plain-array backward: (dq, dk, dv) from g = dL/dY, in blocks over the batch axis.
    ``out``: optional (dq, dk, dv) buffers to write into (e.g. views of one packed gradient)."""
    xp = backend.xp
    if q.ndim == 2:
        grads = sdpa_backward(g[None], q[None], k[None], v[None], p[None], None if keep is None else keep[None],
                              dropout_p, need, causal=causal)
        return tuple(None if d is None else d[0] for d in grads)
    dq, dk, dv = out if out is not None else (xp.empty_like(x) if n else None for x, n in zip((q, k, v), need))
    parallel.for_rows(attention_backward_kernel, (dq, dk, dv, g, q, k, v, p, keep),
                      (_query_chunks(q.shape[-2], k.shape[-2], causal), 1.0 / (1.0 - dropout_p)),
                      grain=_grain(p[0].size))
    return dq, dk, dv


def check_attention_shapes(q, k, v):
    """q (..., H, T_q, d), k (..., H_kv, T_k, d), v (..., H_kv, T_k, d_v) with H a multiple of H_kv
    and T_q ≤ T_k when causal (the queries are the last T_q positions); anything else is refused."""
    heads_fit = q.ndim == k.ndim == v.ndim >= 2 and k.shape[:-1] == v.shape[:-1] and q.shape[-1] == k.shape[-1]
    if heads_fit and q.ndim > 2:
        heads_fit = q.shape[:-3] == k.shape[:-3] and q.shape[-3] % k.shape[-3] == 0
    if not heads_fit:
        raise ValueError(f"attention: q, k, v shapes {q.shape}, {k.shape}, {v.shape} do not fit (need "
                         f"(..., H, Tq, d), (..., Hkv, Tk, d), (..., Hkv, Tk, dv) with H a multiple of Hkv)")


def grouped_views(q, k, v):
    """Plain arrays as (…, H_kv, G, T_q, d) and (…, H_kv, 1, T_k, d) views when H = G·H_kv with
    G > 1 (grouped-query attention, no copy of K/V); unchanged otherwise."""
    if q.ndim < 3 or q.shape[-3] == k.shape[-3]:
        return q, k, v
    h_kv = k.shape[-3]
    q5 = q.reshape(q.shape[:-3] + (h_kv, q.shape[-3] // h_kv) + q.shape[-2:])
    return q5, k[..., None, :, :], v[..., None, :, :]


# From this many query rows on, the memory-efficient kernels. Measured (bench_memory.py --only switch, GPT-2
# small's attention, B 2, forward + backward, CPU seconds): flash / plain = 1.78 at T 256, 1.44 at 512,
# 0.94 at 1,024, 0.70 at 2,048: below 1,024 recomputing P costs more than holding it saves.
FLASH_MIN_T = 1024


@contextlib.contextmanager
def memory_efficient_attention(enabled=True):
    """Inside the block, attention runs the memory-efficient kernels at every length (``enabled``) or
    never (False), instead of from FLASH_MIN_T query rows on: e.g. to fit a long context at T < 1,024,
    or to measure what each set of kernels holds. Dropout still takes the plain kernels."""
    global FLASH_MIN_T
    saved, FLASH_MIN_T = FLASH_MIN_T, (0 if enabled else math.inf)
    try:
        yield
    finally:
        FLASH_MIN_T = saved


def attention_arrays(q, k, v, causal, dropout_p, need=(True, True, True), y=None):
    """Y for plain arrays, and ``backward(g, out=None) -> (dq, dk, dv)``: the memory-efficient
    kernels (``flash_attention.py``, only Y and the row log-sum-exps kept) from FLASH_MIN_T query
    rows on and without dropout; otherwise the kernels above, which keep P (and dropout's mask)."""
    if q.ndim > 2 and dropout_p == 0.0 and q.shape[-2] >= FLASH_MIN_T:
        y, lse = flash_forward(q, k, v, causal, y)
        return y, lambda g, out=None: flash_backward(g, q, k, v, y, lse, causal, out)
    y, p, keep = sdpa_forward(q, k, v, causal, dropout_p, y)
    return y, lambda g, out=None: sdpa_backward(g, q, k, v, p, keep, dropout_p, need, out, causal)


def scaled_dot_product_attention(q, k, v, causal=True, dropout_p=0.0, training=True):
    """Y = softmax(q kᵀ/√d + M) v over the last two axes; backward fused.

    q (..., H, T_q, d), k (..., H_kv, T_k, d), v (..., H_kv, T_k, d_v): H a multiple of H_kv
    (grouped-query attention; H_kv = 1 is multi-query attention), any head size, and with
    ``causal`` the T_q queries are the last T_q of the T_k positions (a KV cache).
    Plain version: ``lora_np.ops.reference.scaled_dot_product_attention``.
    """
    check_attention_shapes(q, k, v)
    if causal and q.shape[-2] > k.shape[-2]:
        raise ValueError(f"attention: causal attention needs T_q ≤ T_k (queries are the last positions); "
                         f"got T_q={q.shape[-2]}, T_k={k.shape[-2]}")
    dropout_p = check_probability("attention dropout_p", dropout_p) if training else 0.0
    qd, kd, vd = grouped_views(q.data, k.data, v.data)
    need = (q.requires_grad, k.requires_grad, v.requires_grad)
    y, attention_backward = attention_arrays(qd, kd, vd, causal, dropout_p, need)
    shapes = (q.shape, k.shape, v.shape)

    def backward(g):
        grads = attention_backward(g.reshape(y.shape))
        return tuple(None if d is None else d.reshape(shape) for d, shape in zip(grads, shapes))

    return Tensor._from_op(y.reshape(q.shape[:-1] + v.shape[-1:]), (q, k, v), backward)


def split_heads(qkv, n_head):
    """(B, T, 3C) -> q, k, v views of shape (B, H, T, C/H), no copy."""
    b, t, c3 = qkv.shape
    c = c3 // 3
    heads = qkv.reshape(b, t, 3, n_head, c // n_head).transpose(2, 0, 3, 1, 4)
    return heads[0], heads[1], heads[2]


def heads_view(y, n_head):
    """(B, T, C) -> a (B, H, T, C/H) view of the same memory, no copy."""
    b, t, c = y.shape
    return y.reshape(b, t, n_head, c // n_head).transpose(0, 2, 1, 3)


def causal_self_attention(qkv, n_head, dropout_p=0.0, training=True):
    """GPT-2's attention core: (B, T, 3C) packed q|k|v -> (B, T, C), heads split and merged inside.

    The forward writes each head's output straight into the merged (B, T, C) layout, and the
    backward writes dq, dk, dv straight into one (B, T, 3C) gradient, the layout of ``c_attn``'s
    output: no split, transpose or concatenate ops (and no copies) appear in the graph.
    Plain version: ``lora_np.ops.reference.causal_self_attention``.
    """
    b, t, c3 = qkv.shape
    if c3 % 3 or (c3 // 3) % n_head:
        raise ValueError(f"causal_self_attention: last axis {c3} must be 3·C with C divisible by n_head={n_head}")
    dropout_p = check_probability("attention dropout_p", dropout_p) if training else 0.0
    xp = backend.xp
    q, k, v = split_heads(qkv.data, n_head)
    y = xp.empty((b, t, c3 // 3), dtype=qkv.dtype)
    _, attention_backward = attention_arrays(q, k, v, True, dropout_p, y=heads_view(y, n_head))
    shape, dtype = qkv.shape, qkv.dtype

    def backward(g):
        dqkv = xp.empty(shape, dtype=dtype)
        attention_backward(heads_view(g, n_head), out=split_heads(dqkv, n_head))
        return (dqkv,)

    return Tensor._from_op(y, (qkv,), backward)
