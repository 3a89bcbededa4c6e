"""Fused GELU in GPT-2's tanh form ("gelu_new" in Hugging Face).

    y = ½ x (1 + tanh u),   u = √(2/π) (x + 0.044715 x³)

Since 1 + tanh u = 1 + (eᵘ - e⁻ᵘ)/(eᵘ + e⁻ᵘ) = 2eᵘ/(eᵘ + e⁻ᵘ) = 2/(1 + e⁻²ᵘ) = 2σ(2u), the gate
s = ½(1 + tanh u) is σ(2u), the logistic sigmoid, and y = x s. With σ' = σ(1 - σ):

    dy/dx = s + x σ'(2u) 2 du/dx = s + x s (1 - s) 2√(2/π) (1 + 3 · 0.044715 x²)     (all elementwise)

and with t = tanh u, s = ½(1 + t) and s(1 - s) = ¼(1 - t²), which the kernel computes in place:

    dy/dx = ½ ((1 + t) + x (1 - t²) du/dx),     du/dx = √(2/π) (1 + 3 · 0.044715 x²)

The forward keeps only x: the backward recomputes s (one tanh per element) rather than hold a
second 4C-wide array per layer for the whole step (72 MB for GPT-2 small at T 128 × B 4). Both
kernels are elementwise: ``parallel.for_rows`` runs them on cache-sized blocks of the flattened arrays.
Plain version: ``lora_np.ops.reference.gelu``.
"""

import math

from .. import backend, parallel
from ..autograd import Tensor

_C = math.sqrt(2.0 / math.pi)
_CK = _C * 0.044715                      # u = x (_C + _CK x²),  du/dx = _C + 3 _CK x²


def tanh_u_kernel(t, x):
    """t = tanh u = tanh(x (_C + _CK x²)), in place in t."""
    xp = backend.xp
    xp.multiply(x, x, out=t)
    t *= _CK
    t += _C
    t *= x
    xp.tanh(t, out=t)


def gelu_kernel(y, x):
    """y = ½ x (1 + t) (t computed into y first)."""
    tanh_u_kernel(y, x)
    y += 1.0
    y *= 0.5
    y *= x


def gelu_backward_kernel(dx, g, x):
    """dL/dx = g ⊙ ½((1 + t) + x (1 - t²) du/dx), with t = tanh u recomputed from x."""
    xp = backend.xp
    t = xp.empty_like(x)
    tanh_u_kernel(t, x)
    d = xp.multiply(x, x)
    d *= 3 * _CK
    d += _C
    d *= x                                # x du/dx
    xp.multiply(t, t, out=dx)
    xp.subtract(1.0, dx, out=dx)          # 1 - t², in dx until dx is written
    d *= dx
    d += t
    d += 1.0
    xp.multiply(g, d, out=dx)
    dx *= 0.5


def _flat(a):
    return backend.xp.ascontiguousarray(a).reshape(-1)


def gelu(x):
    """y = ½x(1 + tanh(√(2/π)(x + 0.044715x³))) = x σ(2u).   dL/dx = g ⊙ dy/dx (module docstring).

    Plain version: ``lora_np.ops.reference.gelu``."""
    xp = backend.xp
    x_data, shape = _flat(x.data), x.shape
    y = xp.empty_like(x_data)
    parallel.for_rows(gelu_kernel, (y, x_data))

    def backward(g):
        dx = xp.empty_like(x_data)
        parallel.for_rows(gelu_backward_kernel, (dx, _flat(g), x_data))
        return (dx.reshape(shape),)

    return Tensor._from_op(y.reshape(shape), (x,), backward)
