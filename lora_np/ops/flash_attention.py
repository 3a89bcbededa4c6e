"""Memory-efficient attention (FlashAttention-2's algorithm, on whole NumPy/CuPy blocks): the (T, T)
probabilities are never held; the forward keeps only Y and each query row's log-sum-exp.

Forward, for one block of query rows (q_i, already scaled by 1/√d) and the key blocks j it may see:
    S_ij = q_i k_jᵀ + M_ij                       (M = -∞ above the causal diagonal and, with a
                                                  sliding window W, where j ≤ i - W)
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
overflow), as the plain softmax does with the true maximum. The key blocks are walked from the
diagonal back, the first one at least as wide as the query block, so it holds every row's own key
(seen by every causal query, window or not): m is finite after it, and e^(m - m_new), e^(S - m_new)
are never e^(-∞ + ∞). A later block may hide a whole row (left of its window): that row's S is -∞,
its max leaves m unchanged and it adds e^-∞ = 0 to l and A.
Sliding window W: query block [a, b) needs keys a + T_k - T_q - W < j < b + T_k - T_q only
(``attention_blocks``), so the key blocks left of the window are never visited: O(T·W) time, and
memory O(block²) whatever the window.

Backward, from G = dL/dY, recomputing each block's probabilities from the saved L:
    P_ij = e^(S_ij - L_i)                        exactly softmax's row-normalised probabilities
    dL/dv_j += P_ijᵀ G_i                         dP_ij = G_i v_jᵀ
    dS_ij = P_ij ⊙ (dP_ij - D_i),   D_i = rowsum(G_i ⊙ Y_i)
    dL/dq_i += dS_ij k_j / √d                    dL/dk_j += dS_ijᵀ q_i / √d
Why D_i: softmax's Jacobian-vector product is dS = P ⊙ (dP - rowsum(dP ⊙ P)), and
rowsum(dP ⊙ P)_r = Σ_j (G vᵀ)_rj P_rj = Σ_c G_rc Σ_j P_rj v_jc = Σ_c G_rc Y_rc: one dot product of
two (T, d) rows that needs no full row of P, so every key block's dS is known from its own P.
The mask (causal or windowed) is a constant: a hidden pair has P = e^(-∞ - L) = 0, so it adds
nothing to dv, dk, dq or D, and the blocks it hides wholly are skipped as in the forward.

Loop order. Like the forward, the backward puts the query blocks outside and the key blocks
inside: each query block's dq_i is summed in a small local buffer and written once, while dk_j and
dv_j are added into the whole (T_k, d) gradients in place. FlashAttention-2's backward (Dao 2023,
Algorithm 2) is the other way round: key blocks outside, so that a GPU thread block owns dk_j, dv_j
in fast memory, and dq accumulated across key blocks (atomic adds). Here the parallelism is over
batch items and heads (``_for_heads``): one thread owns a whole head, so adding into its dk, dv
((T_k, d) each) needs no atomics, and the query-outer order lets both passes share one block walk.

Cost: the backward computes q kᵀ and the exponentials a second time (~1.4× the plain op's
arithmetic); memory: O(block²) per thread instead of O(T²) per head. Grouped-query attention works
as in ``attention.py``: q is (…, H_kv, G, T, d), k, v are (…, H_kv, 1, T, d), dk and dv sum the group.
Dropout on the probabilities would need its mask replayed block by block: ``attention.py`` runs the
plain op (which keeps P and its mask) whenever dropout is on.
Plain version: ``lora_np.ops.reference.scaled_dot_product_attention``.
"""

import math

from .. import backend, parallel
from .attention_blocks import KeyMask, add_product, key_blocks, masked_scores

QUERY_BLOCK = 128  # query rows per block
KEY_BLOCK = 256    # keys per block: S is (rows, G, QUERY_BLOCK, KEY_BLOCK) per thread, a few MB


def _key_blocks(a, b, c, e):
    """Key blocks of query rows [a, b)'s keys [c, e), the diagonal one first and at least b - a wide,
    so that it holds every row's own key (which every causal query sees, window or not)."""
    return key_blocks(c, e, max(KEY_BLOCK, b - a))


def flash_forward_kernel(y, lse, q, k, v, mask):
    """Y and L = log Σ e^S for every query row (module docstring), key block by key block."""
    xp = backend.xp
    scale = 1.0 / math.sqrt(q.shape[-1])
    for a, b, c, e in mask.blocks(q.shape[-2], k.shape[-2], QUERY_BLOCK):
        q_i = q[..., a:b, :] * scale
        m = xp.full(q_i.shape[:-1] + (1,), -xp.inf, dtype=q.dtype)      # running row maximum
        row_sum = xp.zeros_like(m)                                       # l: running Σ e^(S - m)
        acc = xp.zeros(q_i.shape[:-1] + v.shape[-1:], dtype=q.dtype)     # running A = Σ e^(S - m) v
        for c_j, f in _key_blocks(a, b, c, e):
            s = masked_scores(q_i, k[..., c_j:f, :], mask, a, c_j)        # S_ij = q_i k_jᵀ + M_ij
            m_new = xp.maximum(m, s.max(axis=-1, keepdims=True))         # m_new = max(m, rowmax S_ij)
            s -= m_new
            p = xp.exp(s, out=s)                                         # P̃_ij = e^(S_ij - m_new)
            alpha = xp.exp(m - m_new)                                    # e^(m - m_new) rescales the old sums
            row_sum *= alpha
            row_sum += p.sum(axis=-1, keepdims=True)                     # l = e^(m - m_new) l + rowsum P̃_ij
            acc *= alpha
            acc += p @ v[..., c_j:f, :]                                  # A = e^(m - m_new) A + P̃_ij v_j
            m = m_new
        xp.divide(acc, row_sum, out=y[..., a:b, :])                      # Y_i = A / l
        lse[..., a:b] = (m + xp.log(row_sum))[..., 0]                    # L_i = m + log l


def flash_backward_kernel(dq, dk, dv, g, q, k, v, y, lse, mask):
    """(dq, dk, dv) from G = dL/dY, each block's P recomputed from L (module docstring): query
    blocks outside, key blocks inside; dq_i is summed locally, dk and dv in place."""
    xp = backend.xp
    scale = 1.0 / math.sqrt(q.shape[-1])
    dk[...] = 0
    dv[...] = 0
    for a, b, c, e in mask.blocks(q.shape[-2], k.shape[-2], QUERY_BLOCK):
        q_i, g_i = q[..., a:b, :] * scale, g[..., a:b, :]
        lse_i = lse[..., a:b, None]
        d_i = (g_i * y[..., a:b, :]).sum(axis=-1, keepdims=True)      # D_i = rowsum(G_i ⊙ Y_i)
        dq_i = xp.zeros(q_i.shape, dtype=q.dtype)
        for c_j, f in _key_blocks(a, b, c, e):
            s = masked_scores(q_i, k[..., c_j:f, :], mask, a, c_j)
            s -= lse_i
            p = xp.exp(s, out=s)                     # in the forward P = e^(S - m)/l, so now P = e^(S - L)
            add_product(dv[..., c_j:f, :], p.swapaxes(-1, -2), g_i)      # Y = P v, so dv_j += P_ijᵀ G_i
            dp = g_i @ v[..., c_j:f, :].swapaxes(-1, -2)                 # ... and dP_ij = G_i v_jᵀ
            dp -= d_i
            dp *= p                                                      # P = softmax(S): dS = P ⊙ (dP - D_i)
            dq_i += dp @ k[..., c_j:f, :]                                # S = q̃ kᵀ (q̃ = q/√d): dq̃_i += dS k_j
            add_product(dk[..., c_j:f, :], dp.swapaxes(-1, -2), q_i)     # ... and dk_j += dSᵀ q̃_i
        xp.multiply(dq_i, scale, out=dq[..., a:b, :])                    # q̃ = q/√d, so dq = dq̃ / √d


def _for_heads(kernel, rows, shared):
    """``parallel.for_rows`` over the batch axis, or over the head axis when there are more heads
    than batch items (so B = 1 still uses every thread); all arrays are swapped as views."""
    if rows[0].ndim >= 4 and rows[0].shape[1] > rows[0].shape[0]:
        rows = tuple(a.swapaxes(0, 1) for a in rows)
    parallel.for_rows(kernel, rows, shared, grain=1)


def flash_forward(q, k, v, causal, y=None, window=None):
    """Plain arrays (B, H.., T, d) -> (Y, L): ``y`` is the (possibly strided) output buffer;
    ``window``: a sliding window of that many keys (``attention_blocks``)."""
    xp = backend.xp
    y = xp.empty(q.shape[:-1] + v.shape[-1:], dtype=q.dtype) if y is None else y
    lse = xp.empty(q.shape[:-1], dtype=q.dtype)
    _for_heads(flash_forward_kernel, (y, lse, q, k, v), (KeyMask.of(q.shape[-2], k.shape[-2], causal, window),))
    return y, lse


def flash_backward(g, q, k, v, y, lse, causal, out=None, window=None):
    """(dq, dk, dv) from g = dL/dY; ``out``: optional buffers to write into (views of one gradient)."""
    xp = backend.xp
    dq, dk, dv = out if out is not None else (xp.empty(x.shape, dtype=x.dtype) for x in (q, k, v))
    mask = KeyMask.of(q.shape[-2], k.shape[-2], causal, window)
    _for_heads(flash_backward_kernel, (dq, dk, dv, g, q, k, v, y, lse), (mask,))
    return dq, dk, dv
