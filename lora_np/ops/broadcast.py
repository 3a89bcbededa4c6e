"""Operands of binary ops, and the gradient rule for NumPy broadcasting.

If ``a`` of shape (3, 1) meets ``b`` of shape (4,), both act as (3, 4). Each element of ``a`` was
used 4 times, so its gradient is the sum of the 4 output gradients it fed: reverse broadcasting is
a sum over the axes that were added in front or stretched from size 1.
"""

import numpy as np

from .. import backend
from ..autograd import Tensor


def unbroadcast(g, shape):
    """Sum ``g`` over the axes along which an input of ``shape`` was broadcast to ``g.shape``."""
    if g.shape == shape:
        return g
    extra = g.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(
        extra + i for i, n in enumerate(shape) if n == 1 and g.shape[extra + i] != 1)
    return g.sum(axis=axes, keepdims=True).reshape(shape)


def broadcast_shape(a_shape, b_shape, op):
    """The broadcast result shape, or a ValueError naming both shapes."""
    try:
        return np.broadcast_shapes(a_shape, b_shape)
    except ValueError:
        raise ValueError(f"{op}: shapes {a_shape} and {b_shape} cannot be broadcast together") from None


def _constant(value, like):
    """A Python number or array as a constant Tensor; numbers take ``like``'s floating dtype."""
    if isinstance(value, (bool, int, float, np.number)) and like.dtype.kind == "f":
        return Tensor(backend.xp.asarray(value, dtype=like.dtype))
    return Tensor(value)


def binary_operands(a, b, op):
    """``a`` and ``b`` as Tensors with one dtype; float32 never meets float64 silently."""
    if not isinstance(a, Tensor):
        a = _constant(a, b)
    if not isinstance(b, Tensor):
        b = _constant(b, a)
    if a.dtype != b.dtype:
        a_float, b_float = a.dtype.kind == "f", b.dtype.kind == "f"
        if a_float and b_float:
            raise TypeError(f"{op}: dtype mismatch, {a.dtype} and {b.dtype}; convert one with .astype() "
                            f"(lora_np does not upcast silently)")
        if a_float:
            b = Tensor(b.data.astype(a.dtype))
        elif b_float:
            a = Tensor(a.data.astype(b.dtype))
    if a.shape != b.shape:  # (equal shapes, the common case, need no check)
        broadcast_shape(a.shape, b.shape, op)
    return a, b
