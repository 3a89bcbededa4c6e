"""Numerical gradient check: do the hand-derived backward passes agree with central differences?

For inputs x and an output y = f(x), take a fixed random r and L = Σ r ⊙ y, a scalar whose
gradient is the vector-Jacobian product rᵀ ∂y/∂x that backward() computes. Each input element is
then nudged by ±eps and

    numeric  = (L(x + eps) - L(x - eps)) / (2 eps)          (error O(eps²))
    analytic = the same element of x.grad

must agree: |analytic - numeric| ≤ atol + rtol · |numeric|. Everything runs in float64, where
eps = 1e-6 leaves about 10 significant digits of difference.
"""

import numpy as np

from . import backend
from .autograd import Tensor


class GradcheckError(AssertionError):
    """Analytic and numeric gradients disagree (the message names the worst element)."""


def _as_tuple(inputs):
    return tuple(inputs) if isinstance(inputs, (list, tuple)) else (inputs,)


def _scalar_objective(fn, inputs, weights):
    out = fn(*inputs)
    outs = _as_tuple(out)
    total = 0.0
    for o, w in zip(outs, weights):
        total = (o * w).sum() + total
    return total


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, seed=0):
    """Compare ``fn``'s backward with central differences for every input that requires grad.

    ``fn(*inputs)`` returns a Tensor (or a tuple of Tensors); inputs that require grad must be
    float64. Returns True, or raises GradcheckError naming the input, the worst element's index,
    and the analytic and numeric values there.
    """
    inputs = _as_tuple(inputs)
    checked = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input has requires_grad=True; nothing to check")
    for i in checked:
        if inputs[i].dtype != np.float64:
            raise TypeError(f"gradcheck: input {i} is {inputs[i].dtype}; central differences need float64 "
                            f"inputs (use Tensor(x, requires_grad=True, dtype='float64'))")

    outs = _as_tuple(fn(*inputs))
    rng = np.random.default_rng(seed)
    weights = [backend.asarray(rng.standard_normal(o.shape)) for o in outs]

    analytic = _analytic_gradients(fn, inputs, weights, checked)
    for i in checked:
        x = inputs[i]
        numeric = _numeric_gradient(fn, inputs, weights, x, eps)
        got = analytic[i].reshape(-1)
        err = np.abs(got - numeric) - (atol + rtol * np.abs(numeric))
        worst = int(np.argmax(err)) if err.size else 0
        if err.size and err[worst] > 0:
            index = np.unravel_index(worst, x.shape)
            raise GradcheckError(
                f"gradcheck failed for input {i} (shape {x.shape}) at index {tuple(int(k) for k in index)}: "
                f"analytic {got[worst]:.10g}, numeric {numeric[worst]:.10g} "
                f"(|diff| {abs(got[worst] - numeric[worst]):.3g} > atol {atol} + rtol {rtol} · |numeric|)")
    return True


def _analytic_gradients(fn, inputs, weights, checked):
    """dL/dx from backward() for each checked input, with the inputs' .grad restored afterwards."""
    saved_grads = {i: inputs[i].grad for i in checked}  # restored at the end: no side effects
    for i in checked:
        inputs[i].grad = None
    _scalar_objective(fn, inputs, weights).backward()
    analytic = {i: backend.to_numpy(inputs[i].grad) if inputs[i].grad is not None
                else np.zeros(inputs[i].shape) for i in checked}
    for i in checked:
        inputs[i].grad = saved_grads[i]
    return analytic


def _numeric_gradient(fn, inputs, weights, x, eps):
    """(L(x + eps e_j) - L(x - eps e_j)) / 2 eps for every element j of x, x nudged in place."""
    x.data = backend.xp.ascontiguousarray(x.data)
    flat = x.data.reshape(-1)  # a view: nudging it nudges x
    numeric = np.empty(x.size)
    for j in range(x.size):
        old = flat[j].item()
        flat[j] = old + eps
        plus = _scalar_objective(fn, inputs, weights).item()
        flat[j] = old - eps
        minus = _scalar_objective(fn, inputs, weights).item()
        flat[j] = old
        numeric[j] = (plus - minus) / (2 * eps)
    return numeric
