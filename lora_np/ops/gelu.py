"""Fused GELU in GPT-2's tanh form ("gelu_new" in Hugging Face).

Forward:  y = ½ x (1 + t),   t = tanh(u),   u = √(2/π) (x + 0.044715 x³)
Backward: dy/dx = ½ (1 + t) + ½ x (1 - t²) · √(2/π) (1 + 3 · 0.044715 x²)
Saving t from the forward makes the backward a handful of in-place passes; no tanh is recomputed.
"""

import math

from .. import backend
from ..autograd import Tensor

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_CUBIC = 0.044715


def gelu_forward(x):
    """Plain-array forward: returns y and t = tanh(u) for the backward."""
    t = x * x
    t *= _CUBIC
    t += 1.0
    t *= x
    t *= _SQRT_2_OVER_PI                       # u = √(2/π)(x + 0.044715x³)
    backend.xp.tanh(t, out=t)                  # t = tanh(u)
    y = t + 1.0
    y *= x
    y *= 0.5
    return y, t


def gelu_backward(g, x, t):
    """Plain-array backward: dL/dx = g · dy/dx (see the module docstring)."""
    du = x * x
    du *= 3 * _CUBIC
    du += 1.0
    du *= _SQRT_2_OVER_PI                      # du/dx
    sech2 = t * t
    sech2 -= 1.0                               # t² - 1 = -(1 - t²)
    du *= sech2
    du *= x
    du *= -0.5                                 # ½ x (1 - t²) du/dx
    du += 0.5 * t
    du += 0.5                                  # + ½ (1 + t)
    du *= g
    return du


def gelu(x):
    """y = ½x(1 + tanh(√(2/π)(x + 0.044715x³))).   dL/dx = g · dy/dx (module docstring)."""
    y, t = gelu_forward(x.data)
    return Tensor._from_op(y, (x,), lambda g: (gelu_backward(g, x.data, t),))
