"""Elementwise ops. Each returns ``y`` and a closure mapping g = dL/dy to dL/d(input).

The chain rule for an elementwise y = f(a) is dL/da = g · f'(a); for two inputs each gets its
own partial derivative, summed over the axes it was broadcast along (``unbroadcast``).
"""

import numpy as np

from .. import backend
from ..autograd import Tensor
from .broadcast import binary_operands, unbroadcast


def _grads(a, b, grad_a, grad_b):
    """Evaluate only the partials that a parent needs, reduced to that parent's shape."""
    return (unbroadcast(grad_a(), a.shape) if a.requires_grad else None,
            unbroadcast(grad_b(), b.shape) if b.requires_grad else None)


def add(a, b):
    """y = a + b.   dL/da = g,  dL/db = g."""
    a, b = binary_operands(a, b, "add")
    return Tensor._from_op(a.data + b.data, (a, b), lambda g: _grads(a, b, lambda: g, lambda: g))


def sub(a, b):
    """y = a - b.   dL/da = g,  dL/db = -g."""
    a, b = binary_operands(a, b, "sub")
    return Tensor._from_op(a.data - b.data, (a, b), lambda g: _grads(a, b, lambda: g, lambda: -g))


def mul(a, b):
    """y = a · b.   dL/da = g · b,  dL/db = g · a."""
    a, b = binary_operands(a, b, "mul")
    return Tensor._from_op(a.data * b.data, (a, b),
                           lambda g: _grads(a, b, lambda: g * b.data, lambda: g * a.data))


def div(a, b):
    """y = a / b.   dL/da = g / b,  dL/db = -g · a / b² = -g · y / b."""
    a, b = binary_operands(a, b, "div")
    if a.dtype.kind != "f":  # int / int is a float division: compute it in the default float dtype
        a, b = Tensor(a.data.astype(np.float32)), Tensor(b.data.astype(np.float32))
    y = a.data / b.data
    return Tensor._from_op(y, (a, b), lambda g: _grads(a, b, lambda: g / b.data, lambda: -g * y / b.data))


def neg(a):
    """y = -a.   dL/da = -g."""
    return Tensor._from_op(-a.data, (a,), lambda g: (-g,))


def pow(a, exponent):
    """y = a ** p for a scalar p.   dL/da = g · p · a^(p-1)."""
    if isinstance(exponent, Tensor) or not isinstance(exponent, (int, float, np.number)) or isinstance(exponent, bool):
        raise TypeError(f"pow: the exponent must be a Python or NumPy real scalar; got {type(exponent).__name__}")
    p = exponent.item() if isinstance(exponent, np.number) else exponent  # a NumPy float64 would upcast
    return Tensor._from_op(a.data ** p, (a,), lambda g: (g * (p * a.data ** (p - 1)),))


def exp(a):
    """y = eᵃ.   dL/da = g · y."""
    y = backend.xp.exp(a.data)
    return Tensor._from_op(y, (a,), lambda g: (g * y,))


def log(a):
    """y = ln a.   dL/da = g / a."""
    return Tensor._from_op(backend.xp.log(a.data), (a,), lambda g: (g / a.data,))


def tanh(a):
    """y = tanh a.   dL/da = g · (1 - y²)."""
    y = backend.xp.tanh(a.data)
    return Tensor._from_op(y, (a,), lambda g: (g * (1 - y * y),))


def sqrt(a):
    """y = √a.   dL/da = g / (2y)."""
    y = backend.xp.sqrt(a.data)
    return Tensor._from_op(y, (a,), lambda g: (g / (2 * y),))
