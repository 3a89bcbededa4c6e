"""The tied LM head and the cross-entropy in one op: the (N, V) logits never exist whole.

Unfused, a language model ends with ``Z = H Wᵀ`` (N, V) and ``cross_entropy(Z)``. At GPT-2's
vocabulary (V = 50,257) and N = 512 rows that is 103 MB of logits, as much again for their
gradient, and the biggest matmuls of the step. The math of the fused op, per row (target t, n rows
that count, P = softmax(z), Y = onehot(t)):

    L = (1/n) Σ_rows (lse - z_t),          lse = log Σⱼ e^zⱼ
    dL/dZ = (P - Y) / n                     (cross_entropy.py)
    dL/dH = dZ W = (Σⱼ Pⱼ Wⱼ - W_t) / n      dL/dW = dZᵀ H      (Z = H Wᵀ)

The vocabulary is walked in blocks b of a few thousand columns, flash-attention style: with the
block's running max m, the exponentials e^(zⱼ - m) never overflow, and

    Σⱼ Pⱼ Wⱼ = Σ_b e^(m_b - lse) U_b,       U_b = Σ_{j∈b} e^(zⱼ - m_b) Wⱼ  = E_b W_b   (R, C)
    lse = log Σ_b e^(m_b) S_b,              S_b = Σ_{j∈b} e^(zⱼ - m_b)

so one pass over W gives the loss and dL/dH: for each block, Z_b = H W_bᵀ, E_b = exp(Z_b - m),
U += E_b W_b, both GEMMs with all R rows and W_b still in cache. Moving from block to block, a new
running max m' rescales what was summed: U ← e^(m - m') U, S ← e^(m - m') S. Each thread walks its
own slice of the vocabulary (``parallel.for_rows`` over slices) and the slices are combined at the
end with the same rescaling. z_t is a row-wise dot product H·W_t.

dL/dW is needed only when the embedding trains (full fine-tuning; under LoRA it is frozen and gets
neither the matmul nor the (V, C) buffer): a second pass recomputes each Z_b, forms
G_b = (e^(Z_b - lse) - Y_b) / n and adds G_bᵀ H into its rows of dW.

The loss is a scalar, so backward only scales these by the incoming g: they are formed here, in the
forward pass, when grad mode is on and H or W requires grad. Rows go in chunks of at most
ROWS_PER_CHUNK, so memory stays bounded for any batch: one (R, block) tile and one (R, C) sum per
thread.

Plain version: ``cross_entropy(matmul(h, W.T), targets)``; tests/test_lm_head_loss.py checks that
both agree in value and gradient.
"""

import numpy as np

from .. import backend, parallel
from ..autograd import Tensor, is_grad_enabled
from .cross_entropy import validated_targets

ROWS_PER_CHUNK = 1024
TILE_BYTES = 4 << 20  # one (R, block) tile of logits per thread


def vocab_block(rows, itemsize, tile_bytes=TILE_BYTES):
    """Columns of the vocabulary per block, so that a (rows, block) tile is about ``tile_bytes``."""
    return max(64, tile_bytes // (rows * itemsize))


def logsumexp_pass_kernel(m, s, u, bounds, h, w, block):
    """For each vocabulary slice [lo, hi) of ``bounds`` (P, 2), block by block:
    m (P, R) the running row max of Z = h wᵀ, s (P, R) = Σ e^(Z - m), u (P, R, C) = Σ e^(Z - m) w (if not None)."""
    xp = backend.xp
    for p, (lo, hi) in enumerate(bounds.tolist()):
        m[p] = -xp.inf
        s[p] = 0
        if u is not None:
            u[p] = 0
        for b in range(lo, hi, block):
            w_b = w[b:min(b + block, hi)]
            z = h @ w_b.T                                    # (R, block)
            m_new = xp.maximum(m[p], z.max(axis=1))
            rescale = xp.exp(m[p] - m_new)
            z -= m_new[:, None]
            xp.exp(z, out=z)
            s[p] = s[p] * rescale + z.sum(axis=1)
            if u is not None:
                u[p] *= rescale[:, None]
                u[p] += z @ w_b
            m[p] = m_new


def dw_pass_kernel(bounds, dw, h, w, lse, t, keep, scale, block):
    """dw[j] = Σ_rows G[row, j] h[row] for the vocabulary slices of ``bounds``: G = (e^(Z - lse) - Y)·scale."""
    xp = backend.xp
    rows = xp.arange(h.shape[0])
    for lo, hi in bounds.tolist():
        for b in range(lo, hi, block):
            e = min(b + block, hi)
            g = h @ w[b:e].T
            g -= lse[:, None]
            xp.exp(g, out=g)
            hit = keep & (t >= b) & (t < e)
            g[rows[hit], t[hit] - b] -= 1
            g *= (scale * keep)[:, None]
            dw[b:e] += g.T @ h


def lm_head_loss(h, weight, targets, ignore_index=-1, rows_per_chunk=ROWS_PER_CHUNK, block=None):
    """Mean cross-entropy of the logits h·Wᵀ, never formed whole.   dL/dH = (P - Y) W / n, dL/dW = (P - Y)ᵀ H / n.

    ``h``: (..., C) hidden states; ``weight``: (V, C), the token embedding the head is tied to;
    ``targets``: ints of shape h.shape[:-1]; rows whose target is ``ignore_index`` count for nothing.
    ``rows_per_chunk`` and ``block`` (vocabulary columns per tile; default: a TILE_BYTES tile) set the
    tiling: they change the memory and the speed, not the result.
    """
    xp = backend.xp
    if weight.ndim != 2 or h.shape[-1] != weight.shape[1]:
        raise ValueError(f"lm_head_loss: hidden states of shape {h.shape} do not fit the embedding of shape "
                         f"{weight.shape} (the last axis of h must equal the embedding width)")
    if h.dtype != weight.dtype:
        raise TypeError(f"lm_head_loss: hidden states are {h.dtype}, the embedding is {weight.dtype}")
    h2, w = h.data.reshape(-1, h.shape[-1]), weight.data
    (n_rows, width), vocab = h2.shape, w.shape[0]
    t, n = validated_targets(targets, n_rows, vocab, ignore_index)
    keep = t != ignore_index
    t = xp.where(keep, t, 0)
    need_h = is_grad_enabled() and h.requires_grad
    need_w = is_grad_enabled() and weight.requires_grad
    dh = xp.empty_like(h2) if need_h else None
    dw = xp.zeros_like(w) if need_w else None
    scale = w.dtype.type(1.0 / n)

    n_slices = min(parallel.thread_count(), vocab)
    edges = np.linspace(0, vocab, n_slices + 1).astype(np.int64)
    bounds = np.stack([edges[:-1], edges[1:]], axis=1)  # (P, 2) on the host: one vocabulary slice per thread
    total = xp.zeros((), dtype=xp.float64)
    for lo in range(0, n_rows, rows_per_chunk):
        hi = min(lo + rows_per_chunk, n_rows)
        hc, tc, kc = h2[lo:hi], t[lo:hi], keep[lo:hi]
        cols = block or vocab_block(hi - lo, w.dtype.itemsize)
        m = xp.empty((n_slices, hi - lo), dtype=w.dtype)
        s = xp.empty_like(m)
        u = xp.empty((n_slices, hi - lo, width), dtype=w.dtype) if need_h else None
        parallel.for_rows(logsumexp_pass_kernel, (m, s, u, bounds), (hc, w, cols), grain=1)
        m_all = m.max(axis=0)
        weights = xp.exp(m - m_all)                     # e^(m_p - max): each slice's share, rescaled
        lse = m_all + xp.log((weights * s).sum(axis=0))
        w_t = w[tc]                                     # (R, C) the targets' embedding rows
        z_t = (hc * w_t).sum(axis=1)
        total += ((lse - z_t) * kc).sum(dtype=xp.float64)
        if need_h:                                      # (Σ_p e^(m_p - lse) U_p - W_t) / n
            mix = weights * xp.exp(m_all - lse)         # (P, R)
            dh[lo:hi] = (mix[:, :, None] * u).sum(axis=0) - w_t
            dh[lo:hi] *= (scale * kc)[:, None]
        if need_w:
            parallel.for_rows(dw_pass_kernel, (bounds,), (dw, hc, w, lse, tc, kc, scale, cols), grain=1)
    loss = (total / n).astype(w.dtype)
    h_shape = h.shape

    def backward(g):  # the gradients are ours alone (the graph runs once): scale them in place
        for grad in (dh, dw):
            if grad is not None:
                xp.multiply(grad, g, out=grad)
        return (dh.reshape(h_shape) if need_h else None, dw)

    return Tensor._from_op(loss, (h, weight), backward)
