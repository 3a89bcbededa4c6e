"""Checks for notebook 03 (LoRA's mathematics): the LoRA layer's forward (with dropout), injecting
adapters by target name, LoRA's backward (dX, dA, dB) and the merge."""

import numpy as np

import lora_np
from lora_np import GPT, GPTConfig, gradcheck, ops
from lora_np.autograd import Parameter, Tensor
from lora_np.lora.config import LoraConfig
from lora_np.lora.layer import LoraLinear
from lora_np.nn import Linear, Module

from . import ExerciseFailed, as_op, compare, exercise, leaf, random


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


@exercise
def lora_forward(fn):
    """y = x W + b + s · ((x ⊙ keep) Aᵀ) Bᵀ: dropout's mask ``keep`` (0 or 1/(1-p), drawn once) acts on
    the adapter's input only; the frozen path sees x whole."""
    x, W, A, B, _, s = shapes(seed=20)
    b = random(4, seed=30)
    keep = (np.random.default_rng(31).random(x.shape) > 0.25) / 0.75
    for what, mask in (("without dropout", np.ones_like(x)), ("with a dropout mask", keep)):
        y = fn(x, W, b, A, B, s, mask)
        frozen = ops.linear(Tensor(x), Tensor(W), Tensor(b)).data
        adapter = ops.lora_linear(Tensor(x * mask), Tensor(np.zeros_like(W)), None, Tensor(A), Tensor(B), s).data
        compare(f"y {what}", y, frozen + adapter)
    return "equals the engine's linear + lora_linear, dropout on the adapter's path only"


class LinearWithLoRA(Module):
    """rasbt's wrapper: a frozen Linear plus s·(x Aᵀ)Bᵀ; A Kaiming-uniform as nn.Linear, B = 0."""

    def __init__(self, linear, r=2, alpha=4, seed=0):
        super().__init__()
        self.linear, self.scaling = linear, alpha / r
        bound = 1 / np.sqrt(linear.in_features)
        rng = np.random.default_rng(seed)
        self.lora_A = Parameter(rng.uniform(-bound, bound, (r, linear.in_features)).astype(linear.weight.dtype))
        self.lora_B = Parameter(np.zeros((linear.out_features, r), dtype=linear.weight.dtype))

    def forward(self, x):
        return ops.lora_linear(x, self.linear.weight, self.linear.bias, self.lora_A, self.lora_B, self.scaling)


def _peft_match(name, targets):
    """PEFT's rule for a list of target names: the whole name, or its tail after a dot."""
    return any(name == t or name.endswith("." + t) for t in targets)


def _tiny_gpt():
    lora_np.manual_seed(3)
    return GPT(GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=8))


@exercise
def inject_lora(fn):
    idx = np.random.default_rng(4).integers(0, 13, (2, 8))
    for targets in (["c_attn"], ["c_fc", "attn.c_proj"], ["c_attn", "fc"]):   # "fc" is no module's name or tail
        model = _tiny_gpt()
        base_logits = model(idx)[0].numpy()
        expected = sorted(n for n, m in model.named_modules() if isinstance(m, Linear) and _peft_match(n, targets))
        fn(model, targets, LinearWithLoRA)
        wrapped = sorted(n for n, m in model.named_modules() if isinstance(m, LinearWithLoRA))
        if wrapped != expected:
            raise ExerciseFailed(f"targets {targets}: you wrapped {wrapped or 'nothing'}; PEFT wraps {expected} "
                                 "(a name matches when it equals a target or ends with '.' + target — not when it "
                                 "merely contains it or ends with its letters; the wrapper must replace the "
                                 "attribute on the parent module)")
        trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
        want = sorted(f"{n}.lora_{f}" for n in expected for f in "AB")
        if trainable != want:
            raise ExerciseFailed(f"targets {targets}: trainable after your function: {trainable[:4]}...; "
                                 f"exactly the adapters' A and B should be: {want[:4]}...")
        compare(f"logits at step 0 (B = 0), targets {targets}", model(idx)[0].numpy(), base_logits, atol=1e-6)
        for n, m in model.named_modules():
            if isinstance(m, LinearWithLoRA):
                m.lora_B.data = m.lora_B.data + 0.5
        if np.allclose(model(idx)[0].numpy(), base_logits, atol=1e-4):
            raise ExerciseFailed("changing B changes nothing: the model's forward does not go through your wrappers")
    return "wraps exactly PEFT's matches, freezes the rest; the model equals the base until B moves"
