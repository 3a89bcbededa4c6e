"""Checks for notebook 06 (LoRA variants): DoRA's backward with the norm held constant."""

from lora_np import gradcheck
from lora_np.autograd import Tensor
from lora_np.ops.dora_linear import dora_linear, dora_weight_norm

from . import as_op, compare, exercise, leaf, random


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
