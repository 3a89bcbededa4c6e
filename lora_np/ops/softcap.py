"""Logit soft-capping (Gemma 2 and 3): y = cap · tanh(x / cap).

A smooth clamp to (-cap, cap): near 0 it is the identity (tanh z ≈ z), far out it saturates, so
no logit grows past the cap however large the activations. Gemma 3 applies it to the final logits
where its config sets ``final_logit_softcapping`` (transformers: ``logits / cap``, ``tanh``, ``* cap``).

With t = tanh(x / cap) and tanh' = 1 - tanh²:

    dy/dx = cap · (1 - t²) · (1/cap) = 1 - t² = 1 - (y / cap)²

so the backward needs only the output y, which the forward returns anyway: no extra array is
kept, and dL/dx = g ⊙ (1 - (y/cap)²). The cap is a constant of the model (no gradient).
Both kernels are elementwise, run on blocks of the flattened arrays (``parallel.for_rows``).
Plain version: ``lora_np.ops.reference.softcap``.
"""

from .. import backend, parallel
from ..autograd import Tensor


def softcap_kernel(y, x, cap):
    """y = cap · tanh(x / cap)."""
    xp = backend.xp
    xp.multiply(x, 1.0 / cap, out=y)         # y = x / cap
    xp.tanh(y, out=y)                        # y = t = tanh(x / cap)
    y *= cap                                 # y = cap · t


def softcap_backward_kernel(dx, g, y, cap):
    """dx = g ⊙ (1 - (y / cap)²)."""
    xp = backend.xp
    xp.multiply(y, 1.0 / cap, out=dx)        # t = y / cap
    xp.multiply(dx, dx, out=dx)              # t²
    xp.subtract(1.0, dx, out=dx)             # dy/dx = 1 - t²
    dx *= g                                  # dL/dx = g ⊙ (1 - t²)


def softcap(x, cap):
    """y = cap · tanh(x / cap) elementwise, for a positive float ``cap``.   dL/dx = g ⊙ (1 - (y/cap)²).

    Plain version: ``lora_np.ops.reference.softcap``."""
    if isinstance(cap, bool) or not isinstance(cap, (int, float)) or not cap > 0:
        raise ValueError(f"softcap: cap must be a positive number (a config's final_logit_softcapping); got {cap!r}")
    xp = backend.xp
    x_data, shape, cap = xp.ascontiguousarray(x.data).reshape(-1), x.shape, float(cap)
    y = xp.empty_like(x_data)
    parallel.for_rows(softcap_kernel, (y, x_data), (cap,))

    def backward(g):
        dx = xp.empty_like(y)
        parallel.for_rows(softcap_backward_kernel, (dx, xp.ascontiguousarray(g).reshape(-1), y), (cap,))
        return (dx.reshape(shape),)

    return Tensor._from_op(y.reshape(shape), (x,), backward)
