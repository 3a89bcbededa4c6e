"""Checks for notebook 06 (LoRA variants): DoRA's backward with the norm held constant, and the
learning rate that makes a change of α harmless."""

import numpy as np

from lora_np import gradcheck, ops
from lora_np.autograd import Tensor
from lora_np.ops.dora_linear import dora_linear, dora_weight_norm
from lora_np.optim import AdamW

from . import ExerciseFailed, as_op, compare, exercise, leaf, random


@exercise
def dora_backward(fn):
    """(dA, dB, dm) of Y = (X W + s·X Aᵀ Bᵀ) ⊙ m/n with n = ‖W + s·AᵀBᵀ‖ per output, held constant."""
    x, W, A, B, g = random(5, 6), random(6, 4, seed=1), random(2, 6, seed=2), random(4, 2, seed=3), random(5, 4, seed=4)
    m, s = 1.0 + random(4, seed=5) ** 2, 0.7
    norm = dora_weight_norm(W, A, B, s)[0]
    dA, dB, dm = fn(g, x, W, A, B, m, s)
    tA, tB, tm = leaf(A), leaf(B), leaf(m)
    dora_linear(Tensor(x), Tensor(W), None, tA, tB, tm, s).backward(g)
    for name, got, expected in (("dA", dA, tA.grad), ("dB", dB, tB.grad), ("dm", dm, tm.grad)):
        compare(name, got, expected)
    forward = lambda A, B, m: (x @ W + s * (x @ A.T) @ B.T) * (m / norm)   # n: a constant, as in DoRA §4.3
    gradcheck(as_op(forward, lambda g, A, B, m: fn(g, x, W, A, B, m, s)), [leaf(A), leaf(B), leaf(m)])
    return "matches the engine's dora_linear and central differences with the norm held constant"


def _first_step_delta(alpha, lr, optimizer, r=4):
    """ΔW = s·AᵀBᵀ after one step from B = 0 on a fixed regression (float64), A as add_lora draws it."""
    rng = np.random.default_rng(0)
    x, W, target = rng.standard_normal((16, 12)), rng.standard_normal((12, 10)) / 4, rng.standard_normal((16, 10))
    A = Tensor(rng.uniform(-1, 1, (r, 12)) / np.sqrt(12), requires_grad=True)
    B = Tensor(np.zeros((10, r)), requires_grad=True)
    s = alpha / r
    loss = ((ops.lora_linear(Tensor(x), Tensor(W), None, A, B, s) - Tensor(target)) ** 2).mean()
    loss.backward()
    if optimizer == "adam":
        AdamW([A, B], lr=lr, weight_decay=0.0).step()
    else:
        for p in (A, B):
            p.data = p.data - lr * p.grad
    return s * A.data.T @ B.data.T


@exercise
def matched_lr(fn):
    lr, alpha = 1e-3, 8.0
    for optimizer in ("adam", "sgd"):
        for new_alpha in (16.0, 2.0):
            new_lr = fn(lr, alpha, new_alpha, optimizer)
            before, after = _first_step_delta(alpha, lr, optimizer), _first_step_delta(new_alpha, new_lr, optimizer)
            if not np.allclose(after, before, rtol=1e-5, atol=1e-12):
                ratio = np.linalg.norm(after) / np.linalg.norm(before)
                raise ExerciseFailed(f"{optimizer}, α {alpha:g} -> {new_alpha:g}: with your lr {new_lr:.3g} the first "
                                     f"step's ΔW is {ratio:.3g}× the original (should be 1)")
    return "the first step's ΔW is the same with Adam (lr·α constant) and with SGD (lr·α² constant)"
