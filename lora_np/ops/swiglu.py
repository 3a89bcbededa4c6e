"""Fused SwiGLU gate: h = silu(a) ⊙ b, the middle of Llama's MLP ``down(silu(gate(x)) ⊙ up(x))``.

    silu(a) = a σ(a),     σ(a) = 1/(1 + e⁻ᵃ),     σ'(a) = σ(a)(1 - σ(a))
    silu'(a) = σ(a) + a σ(a)(1 - σ(a)) = σ(a) (1 + a (1 - σ(a)))          (product rule)

With g = dL/dh (all elementwise):
    dL/da = g ⊙ b ⊙ σ(a)(1 + a(1 - σ(a)))         dL/db = g ⊙ silu(a)

The gate's second term a σ(a)(1 - σ(a)) is what makes SiLU differ from a plain sigmoid gate;
dropping it is the classic mistake. One op instead of sigmoid, two muls and their saved arrays:
the forward keeps a and b (the two projections, which the backward needs anyway) and the
backward recomputes σ(a) rather than hold a third (B, T, 4C)-sized array for the whole step.
Both kernels are elementwise, run on blocks of rows (``parallel.for_rows``).
Plain version: ``lora_np.ops.reference.swiglu``.
"""

import numpy as np

from .. import backend
from .gated import gated


def sigmoid_into(s, a):
    """s = σ(a) = 1/(1 + e⁻ᵃ) (e⁻ᵃ overflows to inf for very negative a, and then s = 0, as it should)."""
    xp = backend.xp
    with np.errstate(over="ignore"):
        xp.negative(a, out=s)
        xp.exp(s, out=s)
    s += 1.0
    xp.divide(1.0, s, out=s)


def swiglu_kernel(h, a, b):
    """h = a σ(a) ⊙ b."""
    sigmoid_into(h, a)
    h *= a
    h *= b


def swiglu_backward_kernel(da, db, g, a, b):
    """da = g ⊙ b ⊙ σ(a)(1 + a(1 - σ(a))),  db = g ⊙ a σ(a)  (σ recomputed from a)."""
    xp = backend.xp
    s = xp.empty_like(a)
    sigmoid_into(s, a)
    xp.multiply(a, s, out=db)
    db *= g
    xp.subtract(1.0, s, out=da)
    da *= a
    da += 1.0
    da *= s
    da *= b
    da *= g


def swiglu(a, b):
    """h = silu(a) ⊙ b for two Tensors of the same shape (``a`` = gate(x), ``b`` = up(x)).
    Backward: the module docstring. Plain version: ``lora_np.ops.reference.swiglu``."""
    return gated("swiglu", swiglu_kernel, swiglu_backward_kernel, a, b)
