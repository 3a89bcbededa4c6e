"""Ops that move elements without changing them: reshape, transpose/permute.

Only positions change, so the gradient moves back the same way: reshape g to the input's shape,
or apply the inverse permutation.
"""

import numpy as np

from ..autograd import Tensor


def reshape(a, *shape):
    """y = a viewed with a new shape.   dL/da = g reshaped to a's shape."""
    shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    try:
        y = a.data.reshape(shape)
    except ValueError:
        raise ValueError(f"reshape: cannot reshape a tensor of shape {a.shape} ({a.size} elements) "
                         f"into shape {shape}") from None
    in_shape = a.shape
    return Tensor._from_op(y, (a,), lambda g: (g.reshape(in_shape),))


def transpose(a, axes=None):
    """y = a with its axes permuted (reversed by default).   dL/da = g with the inverse permutation."""
    axes = tuple(reversed(range(a.ndim))) if axes is None else tuple(axes)
    if sorted(ax % a.ndim if -a.ndim <= ax < a.ndim else ax for ax in axes) != list(range(a.ndim)):
        raise ValueError(f"transpose: axes {axes} are not a permutation of the {a.ndim} axes of shape {a.shape}")

    def backward(g):
        return (g.transpose(np.argsort([ax % g.ndim for ax in axes])),)

    return Tensor._from_op(a.data.transpose(axes), (a,), backward)


def permute(a, *axes):
    """PyTorch's spelling of transpose: ``x.permute(0, 2, 1, 3)``."""
    return transpose(a, axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes)


def swapaxes(a, axis1, axis2):
    """Exchange two axes (``x.swapaxes(-1, -2)`` is a batched matrix transpose).   dL/da = g with
    the same two axes exchanged (a swap is its own inverse)."""
    for axis in (axis1, axis2):
        if not -a.ndim <= axis < a.ndim:
            raise ValueError(f"swapaxes: axis {axis} is out of range for shape {a.shape}")
    return Tensor._from_op(a.data.swapaxes(axis1, axis2), (a,), lambda g: (g.swapaxes(axis1, axis2),))
