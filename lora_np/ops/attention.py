"""Fused causal scaled-dot-product attention: one forward, one hand-written backward.

Forward (per batch and head; q, k, v are (T, d)):
    S = q kᵀ / √d + M           M = -∞ above the diagonal (a query never sees later keys)
    P = softmax(S)  (rows)      Y = P v
and with a sliding window of W keys (Gemma 3's local layers), M is also -∞ where key j is W or more
positions before query i: query i sees i - W < j ≤ i (``attention_blocks`` aligns the positions).
Backward, from G = dL/dY:
    dL/dv = Pᵀ G                dL/dP = G vᵀ
    dL/dS = P ⊙ (dL/dP - rowsum(dL/dP ⊙ P))          (the softmax Jacobian-vector product)
    dL/dq = dL/dS k / √d        dL/dk = (dL/dS)ᵀ q / √d
Masked entries have P = e^-∞ = 0 exactly, so their dL/dS = P ⊙ (…) is 0 too, and each sum above
(over keys for dq and for rowsum, over queries for dk and dv) runs over the seen pairs only: the
mask, causal or windowed, is a constant with no backward of its own; the same formulas hold with
M changed. Every query sees at least its own key, so no row of P is all zeros (nor 0/0).
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
costs the least arithmetic. From ``flash_min_t`` query rows on (an argument of every attention op,
by default the constant FLASH_MIN_T; and without dropout) the op runs
``flash_attention.py`` instead: FlashAttention-2's blocks with an online softmax, which keep only Y
and one log-sum-exp per row and recompute P block by block in the backward (about a third more
arithmetic, O(block²) memory instead of O(T²); with a window, O(T·W) time). FLASH_MIN_T is where
the recomputation stops costing time, measured on GPT-2 small's attention shape by ``benchmarks/bench_memory.py``
(``--switch-point``; results in ``benchmarks/results_memory.md``). With dropout the plain kernels
always run: their P and keep-mask make the backward replay the forward's mask exactly. Both sets
walk the same blocks (``attention_blocks.KeyMask.blocks``), build each block's mask when they reach
it (no cache: nothing grows with the lengths seen), and sum a K/V head's gradient over its query
group with one helper (``attention_blocks.add_product``).
"""

import contextlib
import contextvars
import math

from .. import backend, parallel
from ..autograd import Tensor
from ..checks import check_probability
from .attention_blocks import KeyMask, add_product, check_window, masked_scores
from .dropout import dropout_mask
from .flash_attention import flash_backward, flash_forward
from .softmax import softmax_array, softmax_backward_array

QUERY_CHUNK = 64  # causal attention runs in chunks of query rows; each sees only the keys it may
# Attention scores per block of batch items (1 MB of float32 P). The kernels walk a block one query
# chunk at a time, so what is in cache at once is a fraction of it, while every block costs a dozen
# NumPy calls per chunk: at T 128 (4 heads, B 16, one thread) 16 blocks of one item took 7.9 ms
# for the forward, 4 blocks of four 6.2 ms.
SCORES_PER_BLOCK = 4 * parallel.GRAIN


def _grain(scores_per_item):
    """Batch items per block, so that each block holds about SCORES_PER_BLOCK attention scores."""
    return max(1, SCORES_PER_BLOCK // max(scores_per_item, 1))


def _query_blocks(t_q, t_k, causal, window):
    """Chunks of QUERY_CHUNK query rows and the keys each may see (``attention_blocks``), so the
    all-masked blocks are never computed (about a quarter of the work at T = 128, more at longer T,
    all but O(T·W) with a window of W); without a mask, all the rows at once."""
    mask = KeyMask.of(t_q, t_k, causal, window)
    return mask, mask.blocks(t_q, t_k, QUERY_CHUNK if causal else t_q)


def attention_kernel(y, p, keep, q, k, v, mask, blocks, keep_scale):
    """Y = P v with P = softmax(q kᵀ/√d + M), one chunk of query rows [a, b) against its keys [c, e)
    at a time; P is written into ``p`` for the backward (then dropped out by ``keep``, if given)."""
    xp = backend.xp
    scale = 1.0 / math.sqrt(q.shape[-1])
    for a, b, c, e in blocks:
        q_a, k_c = q[..., a:b, :] * scale, k[..., c:e, :]
        s = masked_scores(q_a, k_c, mask, a, c, out=p[..., a:b, c:e])        # S = (q/√d) kᵀ + M
        softmax_array(s, axis=-1, out=s)                                     # P = softmax(S), by rows
        if keep is not None:
            s = s * keep[..., a:b, c:e] * keep_scale                         # P' = P ⊙ keep / (1 - p)
        xp.matmul(s, v[..., c:e, :], out=y[..., a:b, :])                     # Y = P' v


def attention_backward_kernel(dq, dk, dv, g, q, k, v, p, keep, blocks, keep_scale):
    """(dq, dk, dv) from g = dL/dY (module docstring), chunk by chunk from the last to the first:
    without a window the last chunk sees every key, so it writes dk and dv and the others add to
    them; with one, dk and dv start at zero. A gradient whose buffer is None is not computed."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    order = blocks[::-1]
    fresh = order[0][2:] == (0, k.shape[-2])
    for grad in () if fresh else (dk, dv):
        if grad is not None:
            grad[...] = 0
    for i, (a, b, c, e) in enumerate(order):
        probs, gb, first = p[..., a:b, c:e], g[..., a:b, :], fresh and i == 0
        dropped = probs if keep is None else probs * keep[..., a:b, c:e] * keep_scale
        if dv is not None:                   # in the forward Y = P' v, so now dv += P'ᵀ G ...
            add_product(dv[..., c:e, :], dropped.swapaxes(-1, -2), gb, first)
        ds = gb @ v[..., c:e, :].swapaxes(-1, -2)                            # ... and dP' = G vᵀ
        if keep is not None:                 # P' = P ⊙ keep / (1 - p), so dP = dP' ⊙ keep / (1 - p)
            ds *= keep[..., a:b, c:e]
            ds *= keep_scale
        softmax_backward_array(ds, probs, axis=-1, out=ds)   # P = softmax(S), so dS = P ⊙ (dP - Σ dP ⊙ P)
        ds *= scale                                          # S = (q/√d) kᵀ: both of its grads carry 1/√d
        if dq is not None:
            backend.xp.matmul(ds, k[..., c:e, :], out=dq[..., a:b, :])      # dq = dS k / √d
        if dk is not None:
            add_product(dk[..., c:e, :], ds.swapaxes(-1, -2), q[..., a:b, :], first)   # dk += dSᵀ q / √d


def sdpa_forward(q, k, v, causal=True, dropout_p=0.0, y=None, window=None):
    """Plain arrays (B, ..., T, d) -> (Y, P, keep-mask or None), in blocks over the batch axis.

    ``y``, if given, is the (possibly strided) output buffer. P is kept for the backward; with a
    causal mask (and a ``window``) its entries outside the blocks that hold a seen key are never
    written (nor read). The masks are built per call, block by block: nothing is cached.
    """
    xp = backend.xp
    if q.ndim == 2:  # a single (T, d) matrix: give it a batch axis of one
        y2, p2, keep2 = sdpa_forward(q[None], k[None], v[None], causal, dropout_p, window=window)
        return y2[0], p2[0], None if keep2 is None else keep2[0]
    p = xp.empty(q.shape[:-1] + (k.shape[-2],), dtype=q.dtype)
    y = xp.empty(q.shape[:-1] + (v.shape[-1],), dtype=q.dtype) if y is None else y
    keep = dropout_mask(p.shape, dropout_p) if dropout_p > 0.0 else None
    mask, blocks = _query_blocks(q.shape[-2], k.shape[-2], causal, window)
    parallel.for_rows(attention_kernel, (y, p, keep, q, k, v),
                      (mask, blocks, 1.0 / (1.0 - dropout_p)), grain=_grain(p[0].size))
    return y, p, keep


def sdpa_backward(g, q, k, v, p, keep=None, dropout_p=0.0, need=(True, True, True), out=None, causal=True,
                  window=None):
    """Plain-array backward: (dq, dk, dv) from g = dL/dY, in blocks over the batch axis.
    ``out``: optional (dq, dk, dv) buffers to write into (e.g. views of one packed gradient)."""
    xp = backend.xp
    if q.ndim == 2:
        grads = sdpa_backward(g[None], q[None], k[None], v[None], p[None], None if keep is None else keep[None],
                              dropout_p, need, causal=causal, window=window)
        return tuple(None if d is None else d[0] for d in grads)
    dq, dk, dv = out if out is not None else (xp.empty_like(x) if n else None for x, n in zip((q, k, v), need))
    _, blocks = _query_blocks(q.shape[-2], k.shape[-2], causal, window)
    parallel.for_rows(attention_backward_kernel, (dq, dk, dv, g, q, k, v, p, keep),
                      (blocks, 1.0 / (1.0 - dropout_p)), grain=_grain(p[0].size))
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


# From this many query rows on, the memory-efficient kernels: the default of every attention op's
# ``flash_min_t``, a constant that nothing rebinds. Measured (bench_memory.py --only switch, GPT-2 small's
# attention, B 2, forward + backward, CPU seconds): flash / plain = 1.78 at T 256, 1.44 at 512, 0.94 at
# 1,024, 0.70 at 2,048: below 1,024 recomputing P costs more than holding it saves.
FLASH_MIN_T = 1024

_scoped_flash_min_t = contextvars.ContextVar("flash_min_t", default=None)


@contextlib.contextmanager
def memory_efficient_attention(enabled=True):
    """Inside the block, attention ops called without ``flash_min_t`` run the memory-efficient
    kernels at every length (``enabled``) or never (False): for code that cannot pass the argument
    (a model whose config does not carry it). A context variable, so other threads and the code
    after the block are untouched; no module global is rebound. Dropout still takes the plain kernels."""
    token = _scoped_flash_min_t.set(0 if enabled else math.inf)
    try:
        yield
    finally:
        _scoped_flash_min_t.reset(token)


def resolve_flash_min_t(flash_min_t):
    """The threshold an op uses: its ``flash_min_t`` argument (0: always the memory-efficient
    kernels, math.inf: never), else a ``memory_efficient_attention`` block's, else FLASH_MIN_T."""
    if flash_min_t is None:
        scoped = _scoped_flash_min_t.get()
        return FLASH_MIN_T if scoped is None else scoped
    if isinstance(flash_min_t, bool) or not isinstance(flash_min_t, (int, float)) or not flash_min_t >= 0:
        raise ValueError(f"attention: flash_min_t must be None or a number of query rows ≥ 0 (0: always the "
                         f"memory-efficient kernels, math.inf: never); got {flash_min_t!r}")
    return flash_min_t


def attention_arrays(q, k, v, causal, dropout_p, need=(True, True, True), y=None, window=None, flash_min_t=None):
    """Y for plain arrays, and ``backward(g, out=None) -> (dq, dk, dv)``: the memory-efficient
    kernels (``flash_attention.py``, only Y and the row log-sum-exps kept) from ``flash_min_t``
    query rows on (``resolve_flash_min_t``) and without dropout; otherwise the kernels above, which
    keep P (and dropout's mask). ``window``: a sliding window of that many keys (``attention_blocks``)."""
    window = check_window(window, causal)
    if q.ndim > 2 and dropout_p == 0.0 and q.shape[-2] >= resolve_flash_min_t(flash_min_t):
        y, lse = flash_forward(q, k, v, causal, y, window)
        return y, lambda g, out=None: flash_backward(g, q, k, v, y, lse, causal, out, window)
    y, p, keep = sdpa_forward(q, k, v, causal, dropout_p, y, window)
    return y, lambda g, out=None: sdpa_backward(g, q, k, v, p, keep, dropout_p, need, out, causal, window)


def scaled_dot_product_attention(q, k, v, causal=True, dropout_p=0.0, training=True, window=None, flash_min_t=None):
    """Y = softmax(q kᵀ/√d + M) v over the last two axes; backward fused.

    q (..., H, T_q, d), k (..., H_kv, T_k, d), v (..., H_kv, T_k, d_v): H a multiple of H_kv
    (grouped-query attention; H_kv = 1 is multi-query attention), any head size, and with
    ``causal`` the T_q queries are the last T_q of the T_k positions (a KV cache). ``window``: None,
    or W for sliding-window attention (query i sees keys i - W < j ≤ i; Gemma 3's local layers).
    ``flash_min_t``: from this many query rows on, the memory-efficient kernels (None: FLASH_MIN_T).
    Plain version: ``lora_np.ops.reference.scaled_dot_product_attention``.
    """
    check_attention_shapes(q, k, v)
    if causal and q.shape[-2] > k.shape[-2]:
        raise ValueError(f"attention: causal attention needs T_q ≤ T_k (queries are the last positions); "
                         f"got T_q={q.shape[-2]}, T_k={k.shape[-2]}")
    dropout_p = check_probability("attention dropout_p", dropout_p) if training else 0.0
    qd, kd, vd = grouped_views(q.data, k.data, v.data)
    need = (q.requires_grad, k.requires_grad, v.requires_grad)
    y, attention_backward = attention_arrays(qd, kd, vd, causal, dropout_p, need, window=window,
                                             flash_min_t=flash_min_t)
    shapes, y_shape = (q.shape, k.shape, v.shape), y.shape  # the shape only: the plain kernels' backward needs no Y

    def backward(g):
        grads = attention_backward(g.reshape(y_shape))
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


def causal_self_attention(qkv, n_head, dropout_p=0.0, training=True, window=None, flash_min_t=None):
    """GPT-2's attention core: (B, T, 3C) packed q|k|v -> (B, T, C), heads split and merged inside.

    The forward writes each head's output straight into the merged (B, T, C) layout, and the
    backward writes dq, dk, dv straight into one (B, T, 3C) gradient, the layout of ``c_attn``'s
    output: no split, transpose or concatenate ops (and no copies) appear in the graph. ``window``
    and ``flash_min_t``: as in ``scaled_dot_product_attention``.
    Plain version: ``lora_np.ops.reference.causal_self_attention``.
    """
    b, t, c3 = qkv.shape
    if c3 % 3 or (c3 // 3) % n_head:
        raise ValueError(f"causal_self_attention: last axis {c3} must be 3·C with C divisible by n_head={n_head}")
    dropout_p = check_probability("attention dropout_p", dropout_p) if training else 0.0
    xp = backend.xp
    q, k, v = split_heads(qkv.data, n_head)
    y = xp.empty((b, t, c3 // 3), dtype=qkv.dtype)
    _, attention_backward = attention_arrays(q, k, v, True, dropout_p, y=heads_view(y, n_head), window=window,
                                             flash_min_t=flash_min_t)
    shape, dtype = qkv.shape, qkv.dtype

    def backward(g):
        dqkv = xp.empty(shape, dtype=dtype)
        attention_backward(heads_view(g, n_head), out=split_heads(dqkv, n_head))
        return (dqkv,)

    return Tensor._from_op(y, (qkv,), backward)
