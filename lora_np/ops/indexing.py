"""Indexing, ``x[idx]``: the forward gathers, the backward scatters.

y = a[idx] picks elements, so dL/da is zero except at the picked positions, which receive g.
An integer-array index may pick an element twice; its gradients must then be summed, which a plain
assignment would not do, hence the scatter-add for such ("advanced") indices.
"""

import numpy as np

from .. import backend
from ..autograd import Tensor


def _plain_index(idx):
    """Index arrays (Tensors, lists, host arrays) become arrays of the current backend."""
    if isinstance(idx, tuple):
        return tuple(_plain_index(i) for i in idx)
    if isinstance(idx, Tensor):
        return idx.data
    if isinstance(idx, (list, np.ndarray)):
        return backend.xp.asarray(idx)
    return idx


def _is_basic(idx):
    """Slices, ints, None and Ellipsis only: each element is picked at most once."""
    parts = idx if isinstance(idx, tuple) else (idx,)
    return all(p is None or p is Ellipsis or isinstance(p, (int, slice)) for p in parts)


def getitem(a, idx):
    """y = a[idx].   dL/da = zeros with g scattered (added) into the positions idx picked."""
    idx = _plain_index(idx)
    try:
        y = a.data[idx]
    except IndexError as exc:
        raise IndexError(f"index {idx!r} does not fit a tensor of shape {a.shape}: {exc}") from None
    basic = _is_basic(idx)
    shape, dtype = a.shape, a.dtype

    def backward(g):
        ga = backend.xp.zeros(shape, dtype=dtype)
        if basic:
            ga[idx] = g
        else:
            backend.index_add(ga, idx, g)
        return (ga,)

    return Tensor._from_op(y, (a,), backward)
