"""Checks for notebook 03 (LoRA's mathematics): LoRA's backward (dX, dA, dB) and the merge."""

import numpy as np

from lora_np import gradcheck, ops
from lora_np.autograd import Tensor
from lora_np.lora.config import LoraConfig
from lora_np.lora.layer import LoraLinear
from lora_np.nn import Linear

from . import as_op, compare, exercise, leaf, random


def shapes(seed=0):
    """x (N, d_in), W (d_in, d_out), A (r, d_in), B (d_out, r), G (N, d_out), s."""
    return random(5, 6, seed=seed), random(6, 4, seed=seed + 1), random(2, 6, seed=seed + 2), \
        random(4, 2, seed=seed + 3), random(5, 4, seed=seed + 4), 0.7


@exercise
def lora_backward(fn):
    x, W, A, B, g, s = shapes()
    dx, dA, dB = fn(g, x, W, A, B, s)
    tx, tA, tB = leaf(x), leaf(A), leaf(B)
    ops.lora_linear(tx, Tensor(W), None, tA, tB, s).backward(g)
    for name, got, expected in (("dx", dx, tx.grad), ("dA", dA, tA.grad), ("dB", dB, tB.grad)):
        compare(name, got, expected)
    gradcheck(as_op(lambda x, A, B: x @ W + s * (x @ A.T) @ B.T, lambda g, x, A, B: fn(g, x, W, A, B, s)),
              [leaf(x), leaf(A), leaf(B)])
    return "matches the engine's lora_linear and central differences"


@exercise
def merge(fn):
    x, W, A, B, _, s = shapes(seed=10)
    merged = fn(W, A, B, s)
    compare("x @ merged", x @ merged, ops.lora_linear(Tensor(x), Tensor(W), None, Tensor(A), Tensor(B), s).data)
    base = Linear(6, 4, bias=False, dtype=np.float64)
    base.weight.data = W.copy()
    layer = LoraLinear(base)
    layer.add_adapter("default", LoraConfig(r=2, lora_alpha=2 * s, target_modules=["x"]))
    layer.lora_A["default"].weight.data, layer.lora_B["default"].weight.data = A.copy(), B.copy()
    layer.active_adapter = "default"
    layer.merge()
    compare("the merged weight", merged, layer.weight.data)
    eps, x0 = 1e-6, x[0]
    f = lambda x: x @ W + s * (x @ A.T) @ B.T
    jacobian = np.stack([(f(x0 + eps * e) - f(x0 - eps * e)) / (2 * eps) for e in np.eye(6)])
    compare("the merged weight against ∂y/∂x by central differences", merged, jacobian, atol=1e-6)
    return "equals merge_lora's weight and the layer's Jacobian ∂y/∂x by central differences"
