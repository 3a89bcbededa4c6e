"""Reductions over axes: sum, mean, max (these names shadow the builtins inside this module only).

Each output element depends on the inputs it reduced, so its gradient is spread back over them:
sum copies g to every input, mean copies g/n, max sends g to the input(s) that were the maximum.
"""

from .. import backend
from ..autograd import Tensor


def _axes(axis, ndim):
    """``axis`` (None, int or tuple, negatives allowed) as a sorted tuple of non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    for ax in axes:
        if not isinstance(ax, int) or not -ndim <= ax < ndim:
            raise ValueError(f"axis {ax!r} is out of range for a tensor with {ndim} axes")
    return tuple(sorted(ax % ndim for ax in axes))


def _expand(g, in_shape, axes):
    """Re-insert reduced axes as size 1 so ``g`` broadcasts against the input again."""
    shape = tuple(1 if i in axes else n for i, n in enumerate(in_shape))
    return g.reshape(shape)


def sum(a, axis=None, keepdims=False):
    """y = Σ a over ``axis``.   dL/da = g broadcast back to a's shape."""
    axes = _axes(axis, a.ndim)
    y = backend.xp.asarray(a.data.sum(axis=axes, keepdims=keepdims))
    shape = a.shape

    def backward(g):
        return (backend.xp.broadcast_to(_expand(g, shape, axes), shape),)

    return Tensor._from_op(y, (a,), backward)


def mean(a, axis=None, keepdims=False):
    """y = (1/n) Σ a over ``axis``.   dL/da = g / n broadcast back to a's shape."""
    axes = _axes(axis, a.ndim)
    n = 1
    for ax in axes:
        n *= a.shape[ax]
    y = backend.xp.asarray(a.data.mean(axis=axes, keepdims=keepdims))
    shape = a.shape

    def backward(g):
        return (backend.xp.broadcast_to(_expand(g, shape, axes) / n, shape),)

    return Tensor._from_op(y, (a,), backward)


def max(a, axis=None, keepdims=False):
    """y = max a over ``axis``.   dL/da = g at the maximal elements (split evenly on ties), 0 elsewhere."""
    axes = _axes(axis, a.ndim)
    x = a.data
    y_keep = x.max(axis=axes, keepdims=True)
    y = y_keep if keepdims else y_keep.reshape(tuple(n for i, n in enumerate(x.shape) if i not in axes))

    def backward(g):
        is_max = (x == y_keep).astype(x.dtype)
        return (is_max * (_expand(g, x.shape, axes) / is_max.sum(axis=axes, keepdims=True)),)

    return Tensor._from_op(y, (a,), backward)
