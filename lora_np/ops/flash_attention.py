"""Memory-efficient attention (FlashAttention-2's algorithm, on whole NumPy/CuPy blocks): the (T, T)
probabilities are never held; the forward keeps only Y and each query row's log-sum-exp.

Forward, for one block of query rows (q_i, already scaled by 1/√d) and the key blocks j it may see:
    S_ij = q_i k_jᵀ + M_ij                       (M = -∞ above the causal diagonal)
    m_new = max(m, rowmax S_ij)                  running row maximum, starting at -∞
    P̃_ij = e^(S_ij - m_new)                      this block's unnormalised probabilities
    l = e^(m - m_new) l + rowsum P̃_ij            running denominator Σ_j e^(S - m)
    A = e^(m - m_new) A + P̃_ij v_j               running numerator Σ_j e^(S - m) v
    m = m_new
and after the last block Y_i = A / l and L_i = m + log l (= log Σ_j e^(S_ij), the log-sum-exp).
Why the rescaling is exact: every term of l and A carries a factor e^(-m) for the maximum m
current when it was added; multiplying the old sums by e^(m_old - m_new) turns e^(-m_old) into
e^(-m_new), so at the end l = Σ e^(S - m) and A = Σ e^(S - m) v for the final m, and
A / l = Σ e^S v / Σ e^S = P v. Subtracting the running maximum keeps every exponent ≤ 0 (no
overflow), as the plain softmax does with the true maximum; the first key block (key 0, which every
causal query sees) makes m finite at once, so e^(m - m_new) is never e^(-∞ + ∞).

Backward, from G = dL/dY, recomputing each block's probabilities from the saved L:
    P_ij = e^(S_ij - L_i)                        exactly softmax's row-normalised probabilities
    dL/dv_j += P_ijᵀ G_i                         dP_ij = G_i v_jᵀ
    dS_ij = P_ij ⊙ (dP_ij - D_i),   D_i = rowsum(G_i ⊙ Y_i)
    dL/dq_i += dS_ij k_j / √d                    dL/dk_j += dS_ijᵀ q_i / √d
Why D_i: softmax's Jacobian-vector product is dS = P ⊙ (dP - rowsum(dP ⊙ P)), and
rowsum(dP ⊙ P)_r = Σ_j (G vᵀ)_rj P_rj = Σ_c G_rc Σ_j P_rj v_jc = Σ_c G_rc Y_rc: one dot product of
two (T, d) rows that needs no full row of P, so every key block's dS is known from its own P.

Cost: the backward computes q kᵀ and the exponentials a second time (~1.4× the plain op's
arithmetic); memory: O(block²) per thread instead of O(T²) per head. Grouped-query attention works
as in ``attention.py``: q is (…, H_kv, G, T, d), k, v are (…, H_kv, 1, T, d), dk and dv sum the group.
Dropout on the probabilities would need its mask replayed block by block: ``attention.py`` runs the
plain op (which keeps P and its mask) whenever dropout is on.
Plain version: ``lora_np.ops.reference.scaled_dot_product_attention``.
"""

import math

from .. import backend, parallel

QUERY_BLOCK = 128  # query rows per block
KEY_BLOCK = 256    # keys per block: S is (rows, G, QUERY_BLOCK, KEY_BLOCK) per thread, a few MB


def _blocks(t_q, t_k, causal):
    """(a, b, [(c, f), ...]): query rows [a, b) and the key blocks [c, f) they may see (causal:
    keys up to b - 1 + t_k - t_q; queries are the last t_q positions)."""
    for a in range(0, t_q, QUERY_BLOCK):
        b = min(a + QUERY_BLOCK, t_q)
        e = min(t_k, b + t_k - t_q) if causal else t_k
        yield a, b, [(c, min(c + KEY_BLOCK, e)) for c in range(0, e, KEY_BLOCK)]


def _scores(q_i, k, a, c, f, offset):
    """S_ij = q_i k_jᵀ (q_i, rows a.., already scaled); with a causal ``offset`` = T_k - T_q, -∞ where
    key j comes after query i (j > i + offset): only blocks that cross the diagonal have such keys."""
    xp = backend.xp
    s = q_i @ k[..., c:f, :].swapaxes(-1, -2)
    if offset is not None and f - 1 > a + offset:
        after = xp.arange(c, f) > xp.arange(a, a + q_i.shape[-2])[:, None] + offset   # (rows, keys)
        s += xp.where(after, -xp.inf, 0.0).astype(s.dtype)     # broadcast over batch, heads and group
    return s


def flash_forward_kernel(y, lse, q, k, v, causal):
    """Y and L = log Σ e^S for every query row (module docstring), key block by key block."""
    xp = backend.xp
    scale = 1.0 / math.sqrt(q.shape[-1])
    offset = k.shape[-2] - q.shape[-2] if causal else None
    for a, b, key_blocks in _blocks(q.shape[-2], k.shape[-2], causal):
        q_i = q[..., a:b, :] * scale
        m = xp.full(q_i.shape[:-1] + (1,), -xp.inf, dtype=q.dtype)
        l = xp.zeros_like(m)
        acc = xp.zeros(q_i.shape[:-1] + v.shape[-1:], dtype=q.dtype)
        for c, f in key_blocks:
            s = _scores(q_i, k, a, c, f, offset)
            m_new = xp.maximum(m, s.max(axis=-1, keepdims=True))
            s -= m_new
            p = xp.exp(s, out=s)                                    # P̃ = e^(S - m_new)
            alpha = xp.exp(m - m_new)
            l *= alpha
            l += p.sum(axis=-1, keepdims=True)
            acc *= alpha
            acc += p @ v[..., c:f, :]
            m = m_new
        xp.divide(acc, l, out=y[..., a:b, :])
        lse[..., a:b] = (m + xp.log(l))[..., 0]


def group_product(left, right):
    """Σ_g left_g right_g over the group axis (-3): (…, G, m, n), (…, G, n, p) -> (…, 1, m, p), as one
    product (…, 1, m, G·n) @ (…, 1, G·n, p) (a K/V head's gradient from its G query heads)."""
    xp = backend.xp
    m, p = left.shape[-2], right.shape[-1]
    left_rows = xp.moveaxis(left, -3, -2).reshape(left.shape[:-3] + (1, m, -1))
    return left_rows @ right.reshape(right.shape[:-3] + (1, -1, p))


def _accumulate(dst, left, right):
    """dst += left right, summed over the query group when ``dst`` is a K/V head shared by G queries."""
    dst += group_product(left, right) if left.shape[-3] != dst.shape[-3] else left @ right


def flash_backward_kernel(dq, dk, dv, g, q, k, v, y, lse, causal):
    """(dq, dk, dv) from G = dL/dY, each block's P recomputed from L (module docstring)."""
    xp = backend.xp
    scale = 1.0 / math.sqrt(q.shape[-1])
    offset = k.shape[-2] - q.shape[-2] if causal else None
    dk[...] = 0
    dv[...] = 0
    for a, b, key_blocks in _blocks(q.shape[-2], k.shape[-2], causal):
        q_i, g_i = q[..., a:b, :] * scale, g[..., a:b, :]
        lse_i = lse[..., a:b, None]
        d_i = (g_i * y[..., a:b, :]).sum(axis=-1, keepdims=True)   # D = rowsum(G ⊙ Y)
        dq_i = xp.zeros(q_i.shape, dtype=q.dtype)
        for c, f in key_blocks:
            s = _scores(q_i, k, a, c, f, offset)
            s -= lse_i
            p = xp.exp(s, out=s)                                       # P = e^(S - L)
            _accumulate(dv[..., c:f, :], p.swapaxes(-1, -2), g_i)      # dv += Pᵀ G
            dp = g_i @ v[..., c:f, :].swapaxes(-1, -2)                 # dP = G vᵀ
            dp -= d_i
            dp *= p                                                    # dS = P ⊙ (dP - D)
            dq_i += dp @ k[..., c:f, :]
            _accumulate(dk[..., c:f, :], dp.swapaxes(-1, -2), q_i)     # dk += dSᵀ q / √d
        xp.multiply(dq_i, scale, out=dq[..., a:b, :])                  # dq = dS k / √d


def _for_heads(kernel, rows, shared):
    """``parallel.for_rows`` over the batch axis, or over the head axis when there are more heads
    than batch items (so B = 1 still uses every thread); all arrays are swapped as views."""
    if rows[0].ndim >= 4 and rows[0].shape[1] > rows[0].shape[0]:
        rows = tuple(a.swapaxes(0, 1) for a in rows)
    parallel.for_rows(kernel, rows, shared, grain=1)


def flash_forward(q, k, v, causal, y=None):
    """Plain arrays (B, H.., T, d) -> (Y, L): ``y`` is the (possibly strided) output buffer."""
    xp = backend.xp
    y = xp.empty(q.shape[:-1] + v.shape[-1:], dtype=q.dtype) if y is None else y
    lse = xp.empty(q.shape[:-1], dtype=q.dtype)
    _for_heads(flash_forward_kernel, (y, lse, q, k, v), (causal,))
    return y, lse


def flash_backward(g, q, k, v, y, lse, causal, out=None):
    """(dq, dk, dv) from g = dL/dY; ``out``: optional buffers to write into (views of one gradient)."""
    xp = backend.xp
    dq, dk, dv = out if out is not None else (xp.empty(x.shape, dtype=x.dtype) for x in (q, k, v))
    _for_heads(flash_backward_kernel, (dq, dk, dv, g, q, k, v, y, lse), (causal,))
    return dq, dk, dv
