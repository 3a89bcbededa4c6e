"""Embedding lookup: y[i] = W[idx[i]].

The backward adds each output row's gradient into the row of W it came from. A token that occurs
k times gets the sum of k rows: a scatter-add, done with a sort and a segmented sum rather than
``np.add.at`` (see ``backend.scatter_add_rows``).
"""

from .. import backend
from ..autograd import Tensor
from .index_arrays import as_index_array


def embedding(idx, weight):
    """y = W[idx] (rows of a (V, C) table).   dL/dW[v] = Σ over positions i with idx[i] = v of g[i]."""
    xp = backend.xp
    ids = as_index_array(idx, weight.shape[0], "embedding indices")
    y = weight.data[ids]
    shape, dtype = weight.shape, weight.dtype

    def backward(g):
        dw = xp.zeros(shape, dtype=dtype)
        backend.scatter_add_rows(dw, ids.reshape(-1), g.reshape(-1, shape[1]))
        return (dw,)

    return Tensor._from_op(y, (weight,), backward)
