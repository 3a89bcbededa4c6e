"""Joining and splitting along an axis: concatenate, stack, split.

Joining places each input in its own block of the output, so each input's gradient is its block of
g; splitting is indexing (see ``indexing.py``), whose backward scatters each piece's g back.
"""

from .. import backend
from ..autograd import Tensor
from .indexing import getitem


def _check_same_dtype(tensors, op):
    tensors = [t if isinstance(t, Tensor) else Tensor(t) for t in tensors]
    if not tensors:
        raise ValueError(f"{op}: needs at least one tensor")
    dtypes = {t.dtype for t in tensors}
    if len(dtypes) > 1:
        raise TypeError(f"{op}: tensors have different dtypes {sorted(map(str, dtypes))}; convert with .astype()")
    return tensors


def concatenate(tensors, axis=0):
    """y = [a₀, a₁, ...] joined along ``axis``.   dL/daᵢ = the block of g where aᵢ sits."""
    tensors = _check_same_dtype(tensors, "concatenate")
    try:
        y = backend.xp.concatenate([t.data for t in tensors], axis=axis)
    except (ValueError, IndexError) as exc:
        raise ValueError(f"concatenate: shapes {[t.shape for t in tensors]} along axis {axis}: {exc}") from None
    bounds = [0]
    for t in tensors:
        bounds.append(bounds[-1] + t.shape[axis])

    def backward(g):
        ax = axis % g.ndim
        return tuple(g[(slice(None),) * ax + (slice(lo, hi),)] for lo, hi in zip(bounds, bounds[1:]))

    return Tensor._from_op(y, tuple(tensors), backward)


def stack(tensors, axis=0):
    """y = [a₀, a₁, ...] stacked along a new ``axis``.   dL/daᵢ = g[..., i, ...] along that axis."""
    tensors = _check_same_dtype(tensors, "stack")
    shapes = {t.shape for t in tensors}
    if len(shapes) > 1:
        raise ValueError(f"stack: all tensors need one shape; got {sorted(shapes)}")
    y = backend.xp.stack([t.data for t in tensors], axis=axis)
    n = len(tensors)

    def backward(g):
        return tuple(g.take(i, axis=axis) for i in range(n))

    return Tensor._from_op(y, tuple(tensors), backward)


def split(a, indices_or_sections, axis=0):
    """Pieces of ``a`` along ``axis`` (NumPy's rule: a count of equal sections or split points).

    Each piece is a slice of ``a``, so its gradient flows back through ``getitem``."""
    n = a.shape[axis]
    if isinstance(indices_or_sections, int):
        if indices_or_sections <= 0 or n % indices_or_sections:
            raise ValueError(f"split: axis {axis} of length {n} cannot be split into "
                             f"{indices_or_sections} equal sections")
        step = n // indices_or_sections
        points = list(range(step, n, step))
    else:
        points = list(indices_or_sections)
    ax = axis % a.ndim
    edges = [0] + points + [n]
    return [getitem(a, (slice(None),) * ax + (slice(lo, hi),)) for lo, hi in zip(edges, edges[1:])]
