"""Elementwise ops. Each returns ``y`` and a closure mapping g = dL/dy to dL/d(input).

The chain rule for an elementwise y = f(a) is dL/da = g ⊙ f'(a); for two inputs each gets its
own partial derivative, summed over the axes it was broadcast along (``unbroadcast``). Closures
capture arrays, never Tensors, so nothing else is kept alive for the backward pass.
"""

import numpy as np

from .. import backend, parallel
from ..autograd import Tensor
from .broadcast import binary_operands, unbroadcast


def _binary(y, a, b, grad_a, grad_b):
    """Record y = f(a, b); ``grad_a(g)``, ``grad_b(g)`` give each partial, evaluated only if needed."""
    need_a, need_b, a_shape, b_shape = a.requires_grad, b.requires_grad, a.shape, b.shape

    def backward(g):
        return (unbroadcast(grad_a(g), a_shape) if need_a else None,
                unbroadcast(grad_b(g), b_shape) if need_b else None)

    backward.op_name = grad_a.__qualname__.split(".")[0]  # "mul", "add", ...: the caller's name
    return Tensor._from_op(y, (a, b), backward)


def add(a, b):
    """y = a + b.   dL/da = g,  dL/db = g."""
    a, b = binary_operands(a, b, "add")
    x, z = a.data, b.data
    same = x.shape == z.shape and x.dtype == z.dtype
    y = parallel.add(backend.xp.empty_like(x), x, z) if same else x + z  # on all threads when big
    return _binary(y, a, b, lambda g: g, lambda g: g)


def sub(a, b):
    """y = a - b.   dL/da = g,  dL/db = -g."""
    a, b = binary_operands(a, b, "sub")
    return _binary(a.data - b.data, a, b, lambda g: g, lambda g: -g)


def mul(a, b):
    """y = a ⊙ b.   dL/da = g ⊙ b,  dL/db = g ⊙ a."""
    a, b = binary_operands(a, b, "mul")
    x, z = a.data, b.data
    return _binary(x * z, a, b, lambda g: g * z, lambda g: g * x)


def div(a, b):
    """y = a / b.   dL/da = g / b,  dL/db = -g ⊙ a / b² = -g ⊙ y / b."""
    a, b = binary_operands(a, b, "div")
    if a.dtype.kind != "f":  # int / int is a float division: compute it in the default float dtype
        a, b = Tensor(a.data.astype(np.float32)), Tensor(b.data.astype(np.float32))
    z = b.data
    y = a.data / z
    return _binary(y, a, b, lambda g: g / z, lambda g: -g * y / z)


def neg(a):
    """y = -a.   dL/da = -g."""
    return Tensor._from_op(-a.data, (a,), lambda g: (-g,))


def pow(a, exponent):
    """y = a ** p for a scalar p.   dL/da = p g ⊙ a^(p-1)."""
    if isinstance(exponent, Tensor) or not isinstance(exponent, (int, float, np.number)) or isinstance(exponent, bool):
        raise TypeError(f"pow: the exponent must be a Python or NumPy real scalar; got {type(exponent).__name__}")
    p = exponent.item() if isinstance(exponent, np.number) else exponent  # a NumPy float64 would upcast
    x = a.data
    return Tensor._from_op(x ** p, (a,), lambda g: (g * (p * x ** (p - 1)),))


def exp(a):
    """y = eᵃ.   dL/da = g ⊙ y."""
    y = backend.xp.exp(a.data)
    return Tensor._from_op(y, (a,), lambda g: (g * y,))


def log(a):
    """y = ln a.   dL/da = g / a."""
    x = a.data
    return Tensor._from_op(backend.xp.log(x), (a,), lambda g: (g / x,))


def tanh(a):
    """y = tanh a.   dL/da = g ⊙ (1 - y²)."""
    y = backend.xp.tanh(a.data)
    return Tensor._from_op(y, (a,), lambda g: (g * (1 - y * y),))


def sqrt(a):
    """y = √a.   dL/da = g / (2y)."""
    y = backend.xp.sqrt(a.data)
    return Tensor._from_op(y, (a,), lambda g: (g / (2 * y),))
