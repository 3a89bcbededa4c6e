"""``FrozenTable``: a frozen (V, C) token embedding / LM head kept in the checkpoint's storage.

The vocabulary table is the largest single tensor of a small model (SmolLM2-135M: 49,152 × 576,
113 MiB in float32; Qwen3-0.6B: 151,936 × 1,024, 594 MiB). Under LoRA it never trains, so it can stay
as the checkpoint stores it, bfloat16 words (``Bf16Weight``) or GGUF blocks (``GGUFWeight``), and be
widened only where it is read:

    embedding      y = E[idx]                 the rows idx gathered in storage, then widened (``rows``)
    fused head     lm_head_loss(h, E, t)      block by block of the vocabulary (``band``), each block
                                              widened once and used for both its logits Z_b = H E_bᵀ
                                              and dL/dH's Σ e^(Z_b - m) E_b (ops/lm_head_loss.py)
    logits         Z = H Eᵀ                   band by band of the vocabulary (``table_logits``), and
                   dL/dH = G E = Σ_b G_b E_b  the same bands: each thread sums its bands' G_b E_b,
                                              the threads' sums are added at the end
    no dL/dE: the table is frozen.

The storage is a ``QuantWeight`` of shape (C, V): its Wᵀ (V, C) *is* the table, row v the embedding
of token v, as the file holds it. So the banded matmul of ``linear_op.py`` computes the logits
unchanged, and ``band(r0, r1)`` of the storage is rows r0..r1-1 of the table.

A table is not a Parameter: it has no gradient, it is not in ``state_dict`` (a model holding one
is saved after ``dequantize_model``), and ``ops.embedding`` / ``ops.lm_head_loss`` / ``ops.lm_head``
call its methods instead of indexing an array.
"""

from .. import backend, parallel
from ..autograd import Tensor

TILE_FLOATS = 1 << 20  # values of the table widened at once per thread (4 MiB in float32)


class FrozenTable:
    """The (V, C) table whose storage ``store`` (a ``Bf16Weight`` or ``GGUFWeight`` of shape (C, V))
    holds it row by row. ``rows(ids)`` / ``band(r0, r1)`` widen a piece; ``dequantize()`` all of it."""

    requires_grad = False
    ndim = 2

    def __init__(self, store):
        if not hasattr(store, "rows") or len(store.shape) != 2:
            raise TypeError(f"FrozenTable needs a Bf16Weight or GGUFWeight storage; got {type(store).__name__}")
        self.store = store
        self.shape = (store.shape[1], store.shape[0])

    @property
    def dtype(self):
        return self.store.dtype

    @property
    def nbytes(self):
        return self.store.nbytes

    @property
    def size(self):
        return self.shape[0] * self.shape[1]

    def rows(self, ids):
        """E[ids] (ids.shape + (C,)) in the compute dtype: gathered in storage, then widened."""
        return self.store.rows(ids)

    def band(self, r0, r1):
        """E[r0:r1] widened."""
        return self.store.band(r0, r1)

    def dequantize(self):
        """The whole (V, C) table in the compute dtype (e.g. for ``dequantize_model``)."""
        return self.store.band(0, self.shape[0])

    @property
    def data(self):
        return self.dequantize()

    def lookup(self, ids):
        """The embedding rows E[ids] as a Tensor with no gradient (the table is frozen)."""
        return Tensor(self.rows(ids))

    def logits(self, x):
        """Z = x Eᵀ (..., V), band by band; its backward gives dL/dx = G E, none for E (``table_logits``)."""
        return table_logits(x, self)

    def __repr__(self):
        return f"FrozenTable({self.store!r} as a ({self.shape[0]}, {self.shape[1]}) table, frozen)"



def table_logits(x, table):
    """Z = x Eᵀ for x (..., C), E a frozen (V, C) table, E widened ``TILE_FLOATS`` at a time.

    Forward: Z[:, b] = X E_bᵀ for each band b of vocabulary rows.
    Backward (Z = X Eᵀ, so dZ/dX contracts over the vocabulary): dL/dX = G E = Σ_b G[:, b] E_b, each
    thread summing its own bands into one (N, C) array, the thread sums added at the end; no dL/dE.
    Plain version: ``ops.matmul(x, Tensor(E.dequantize()).T)``, tests/test_frozen_table.py.
    """
    xp = backend.xp
    n_vocab, width = table.shape
    if x.shape[-1] != width or x.dtype != table.dtype:
        raise ValueError(f"table_logits: input {x.dtype} {x.shape} does not fit a {table.dtype} table of shape "
                         f"{table.shape} (the last axis must equal the table's width, the dtypes must agree)")
    x2 = x.data.reshape(-1, width)
    z = xp.empty((x2.shape[0], n_vocab), dtype=x2.dtype)
    band = max(1, TILE_FLOATS // width)

    def logits_bands(lo, hi):
        for b in range(lo, hi, band):
            e = min(b + band, hi)
            z[:, b:e] = x2 @ table.band(b, e).T                  # Z_b = X E_bᵀ

    parallel.parallel_for(n_vocab, logits_bands, grain=band)
    x_shape = x.shape

    def backward(g):
        g2 = g.reshape(-1, n_vocab)

        def dx_bands(lo, hi):
            dx = xp.zeros((g2.shape[0], width), dtype=g2.dtype)
            for b in range(lo, hi, band):
                e = min(b + band, hi)
                dx += g2[:, b:e] @ table.band(b, e)               # dL/dX += G_b E_b
            return dx

        return (sum(parallel.map_blocks(n_vocab, dx_bands, grain=band)).reshape(x_shape),)

    return Tensor._from_op(z.reshape(*x.shape[:-1], n_vocab), (x,), backward)
