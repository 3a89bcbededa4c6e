"""Embedding lookup: y[i] = W[idx[i]].

The backward adds each output row's gradient into the row of W it came from. A token that occurs
k times gets the sum of k rows: a scatter-add. On NumPy it is done with a sort and a segmented sum
(``add_rows``), a few vectorised passes instead of ``np.add.at``'s per-element loop.

A frozen table kept in the checkpoint's storage (``quant/table.py``'s ``FrozenTable``: bf16 words,
GGUF blocks) is not a Tensor: its own ``lookup`` gathers the rows first and widens only those, and
the result has no gradient.
"""


from .. import backend
from ..autograd import Tensor
from .index_arrays import as_index_array


def add_rows(target, rows, values):
    """``target[rows[i]] += values[i]`` for every i, duplicates summed: sort the row ids, sum each
    run of equal ids with ``add.reduceat``, add the sums once per distinct row.

    The sums run in a fixed order, so the result is bit-identical from run to run on the GPU too,
    where a scatter of atomic adds would sum in whatever order the threads arrive."""
    xp = backend.xp
    if not hasattr(xp.add, "reduceat"):  # an array module without reduceat (CuPy before 14)
        return backend.index_add(target, rows, values)
    order = xp.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    starts = xp.flatnonzero(xp.concatenate([xp.ones(1, dtype=bool), sorted_rows[1:] != sorted_rows[:-1]]))
    target[sorted_rows[starts]] += xp.add.reduceat(values[order], starts, axis=0)
    return target


def embedding(idx, weight):
    """y = W[idx] (rows of a (V, C) table).   dL/dW[v] = Σ over positions i with idx[i] = v of g[i]."""
    xp = backend.xp
    ids = as_index_array(idx, weight.shape[0], "embedding indices")
    if not isinstance(weight, Tensor):  # a frozen table (quant/table.py): no gradient
        return weight.lookup(ids)
    y = weight.data[ids]
    shape, dtype = weight.shape, weight.dtype

    def backward(g):
        dw = xp.zeros(shape, dtype=dtype)
        add_rows(dw, ids.reshape(-1), g.reshape(-1, shape[1]))
        return (dw,)

    return Tensor._from_op(y, (weight,), backward)
