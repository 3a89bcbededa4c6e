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
own slice of the vocabulary (``parallel.map_blocks``: one slice per thread) and the slices are
combined at the end with the same rescaling. z_t is a row-wise dot product H·W_t.

dL/dW is needed only when the embedding trains (full fine-tuning; under LoRA it is frozen and gets
neither the matmul nor the (V, C) buffer): a second pass recomputes each Z_b, forms
G_b = (e^(Z_b - lse) - Y_b) / n and adds G_bᵀ H into its rows of dW.

The loss is a scalar, so backward only scales these by the incoming g: they are formed here, in the
forward pass, when grad mode is on and H or W requires grad. Rows go in chunks of at most
ROWS_PER_CHUNK, so memory stays bounded for any batch: one (R, block) tile and one (R, C) sum per
thread.

A frozen table kept in the checkpoint's storage (``quant/table.py``'s ``FrozenTable``: bf16 words,
GGUF blocks) is read the same way: each block W_b is widened once (``weight.band``), used for Z_b and
U_b, and dropped (a block then also holds at most about TILE_BYTES of widened rows); the targets'
rows W_t are gathered in storage and widened (``weight.rows``); it gets no dL/dW. The float32 table
then never exists whole. ``lm_head`` is the unfused logits H Wᵀ for either kind of weight.

Plain version: ``lora_np.ops.reference.lm_head_loss``, i.e. ``cross_entropy(h @ Wᵀ, targets)``;
tests/test_reference.py and tests/test_lm_head_loss.py check that both agree in value and gradient.
"""

from .. import backend, parallel
from ..autograd import Tensor, is_grad_enabled
from .cross_entropy import validated_targets
from .matmul import matmul

ROWS_PER_CHUNK = 1024
TILE_BYTES = 4 << 20  # one (R, block) tile of logits per thread


def vocab_block(rows, itemsize, tile_bytes=TILE_BYTES):
    """Columns of the vocabulary per block, so that a (rows, block) tile is about ``tile_bytes``."""
    return max(64, tile_bytes // (rows * itemsize))


SLICE_GRAIN = 64  # vocabulary columns: a thread's slice is at least this wide


class ArrayTable:
    """A float (V, C) array read as a frozen table is: ``band(r0, r1)`` = W[r0:r1] (a view), ``rows(ids)`` = W[ids]."""

    def __init__(self, w):
        self.w, self.shape = w, w.shape

    def band(self, r0, r1):
        return self.w[r0:r1]

    def rows(self, ids):
        return self.w[ids]


def logsumexp_pass(h, table, lo, hi, block, with_u):
    """For the vocabulary slice lo..hi-1 of ``table`` (its rows W), block by block: (m, s, u) with m (R,)
    the row max of Z = h Wᵀ, s (R,) = Σ e^(Z - m) and u (R, C) = Σ e^(Z - m) W (None unless ``with_u``)."""
    xp = backend.xp
    m = xp.full(h.shape[0], -xp.inf, dtype=h.dtype)
    s = xp.zeros_like(m)
    u = xp.zeros_like(h) if with_u else None
    for b in range(lo, hi, block):
        w_b = table.band(b, min(b + block, hi))          # (block, C), widened here if stored narrower
        z = h @ w_b.T                                    # (R, block)
        m_new = xp.maximum(m, z.max(axis=1))
        rescale = xp.exp(m - m_new)
        z -= m_new[:, None]
        xp.exp(z, out=z)
        s = s * rescale + z.sum(axis=1)
        if u is not None:
            u *= rescale[:, None]
            u += z @ w_b
        m = m_new
    return m, s, u


def dw_pass(dw, h, w, lse, t, keep, scale, block):
    """dw[j] += Σ_rows G[row, j] h[row] over one vocabulary slice (w, dw: its rows; t: targets
    counted from the slice's first column): G = (e^(Z - lse) - Y)·scale, Z = h wᵀ."""
    xp = backend.xp
    rows = xp.arange(h.shape[0])
    for b in range(0, w.shape[0], block):
        e = min(b + block, w.shape[0])
        g = h @ w[b:e].T
        g -= lse[:, None]
        xp.exp(g, out=g)
        hit = keep & (t >= b) & (t < e)
        g[rows[hit], t[hit] - b] -= 1
        g *= (scale * keep)[:, None]
        dw[b:e] += g.T @ h


def chunk_loss(h, table, t, keep, scale, block, dh, dw):
    """One chunk of rows: Σ_rows (lse - z_t) ⊙ keep, and dL/dH into ``dh`` (if not None), dL/dW
    added into ``dw`` (if not None; then ``table`` is an ArrayTable). The vocabulary slices run on all threads."""
    xp = backend.xp
    with_u = dh is not None
    parts = parallel.map_blocks(table.shape[0], lambda lo, hi: logsumexp_pass(h, table, lo, hi, block, with_u),
                                grain=SLICE_GRAIN)
    m = xp.stack([part[0] for part in parts])         # (P, R), one row per slice
    s = xp.stack([part[1] for part in parts])
    m_all = m.max(axis=0)
    weights = xp.exp(m - m_all)                       # e^(m_p - max): each slice's share, rescaled
    lse = m_all + xp.log((weights * s).sum(axis=0))
    w_t = table.rows(t)                               # (R, C) the targets' embedding rows
    z_t = (h * w_t).sum(axis=1)
    if dh is not None:                                # (Σ_p e^(m_p - lse) U_p - W_t) / n
        mix = weights * xp.exp(m_all - lse)           # (P, R)
        dh[...] = sum(mix[p][:, None] * part[2] for p, part in enumerate(parts)) - w_t
        dh *= (scale * keep)[:, None]
    if dw is not None:
        w = table.w
        parallel.map_blocks(w.shape[0], lambda lo, hi: dw_pass(dw[lo:hi], h, w[lo:hi], lse, t - lo, keep, scale,
                                                               block), grain=SLICE_GRAIN)
    return ((lse - z_t) * keep).sum(dtype=xp.float64)


def lm_head_loss(h, weight, targets, ignore_index=-1, rows_per_chunk=ROWS_PER_CHUNK, block=None):
    """Mean cross-entropy of the logits h·Wᵀ, never formed whole.   dL/dH = (P - Y) W / n, dL/dW = (P - Y)ᵀ H / n.

    ``h``: (..., C) hidden states; ``weight``: (V, C), the token embedding the head is tied to;
    ``targets``: ints of shape h.shape[:-1]; rows whose target is ``ignore_index`` count for nothing.
    ``rows_per_chunk`` and ``block`` (vocabulary columns per tile; default: a TILE_BYTES tile) set the
    tiling: they change the memory and the speed, not the result.
    Plain version: ``lora_np.ops.reference.lm_head_loss``.
    """
    xp = backend.xp
    if weight.ndim != 2 or h.shape[-1] != weight.shape[1]:
        raise ValueError(f"lm_head_loss: hidden states of shape {h.shape} do not fit the embedding of shape "
                         f"{weight.shape} (the last axis of h must equal the embedding width)")
    if h.dtype != weight.dtype:
        raise TypeError(f"lm_head_loss: hidden states are {h.dtype}, the embedding is {weight.dtype}")
    frozen = not isinstance(weight, Tensor)  # a FrozenTable (quant/table.py): bf16 words, GGUF blocks
    table = weight if frozen else ArrayTable(weight.data)
    h2, dtype = h.data.reshape(-1, h.shape[-1]), weight.dtype
    t, n = validated_targets(targets, h2.shape[0], weight.shape[0], ignore_index)
    keep = t != ignore_index
    t = xp.where(keep, t, 0)
    dh = xp.empty_like(h2) if is_grad_enabled() and h.requires_grad else None
    dw = xp.zeros_like(table.w) if is_grad_enabled() and weight.requires_grad else None
    scale = dtype.type(1.0 / n)
    total = xp.zeros((), dtype=xp.float64)
    for lo in range(0, h2.shape[0], rows_per_chunk):
        hi = min(lo + rows_per_chunk, h2.shape[0])
        tile = block or vocab_block(hi - lo, dtype.itemsize)
        if frozen and not block:  # its widened block W_b (block, C) is a copy: about TILE_BYTES too
            tile = min(tile, vocab_block(h2.shape[1], dtype.itemsize))
        total += chunk_loss(h2[lo:hi], table, t[lo:hi], keep[lo:hi], scale, tile, None if dh is None else dh[lo:hi], dw)
    loss = (total / n).astype(dtype)
    h_shape = h.shape

    def backward(g):  # the gradients are ours alone (the graph runs once): scale them in place
        for grad in (dh, dw):
            if grad is not None:
                xp.multiply(grad, g, out=grad)
        dh_out = None if dh is None else dh.reshape(h_shape)
        return (dh_out,) if frozen else (dh_out, dw)

    return Tensor._from_op(loss, (h,) if frozen else (h, weight), backward)


def lm_head(h, weight):
    """The logits h Wᵀ (..., V) of the LM head: ``matmul`` for a Parameter, the table's own banded
    ``logits`` for a frozen table (quant/table.py), whose backward gives dL/dh only."""
    return matmul(h, weight.T) if isinstance(weight, Tensor) else weight.logits(h)
