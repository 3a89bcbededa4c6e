"""Checks for notebook 02 (the transformer): layer norm, GELU and causal attention backward."""

import math

import numpy as np

from lora_np import gradcheck, ops

from . import as_op, compare, exercise, leaf, random
from .ex01_autograd import engine_grads

EPS = 1e-5


def layer_norm_forward(x, w, b):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(x.var(-1, keepdims=True) + EPS) * w + b


@exercise
def layer_norm_backward(fn):
    x, w, b, g = random(4, 6) * 3 + 1, random(6, seed=1), random(6, seed=2), random(4, 6, seed=3)
    dx, dw, db = fn(g, x, w)
    want = engine_grads(ops.layer_norm, x, w, b, g=g)
    for name, got, expected in zip(("dx", "dw", "db"), (dx, dw, db), want):
        compare(name, got, expected)
    gradcheck(as_op(layer_norm_forward, lambda g, x, w, b: fn(g, x, w)), [leaf(x), leaf(w), leaf(b)])
    return "matches the engine and central differences"


def gelu_forward(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


@exercise
def gelu_backward(fn):
    x, g = random(3, 7) * 2, random(3, 7, seed=1)
    compare("dx", fn(g, x), engine_grads(ops.gelu, x, g=g)[0])
    gradcheck(as_op(gelu_forward, fn), [leaf(x)])
    return "matches the engine and central differences"


def attention_forward(q, k, v):
    T, d = q.shape
    s = q @ k.T / math.sqrt(d) + np.triu(np.full((T, T), -np.inf), k=1)
    p = np.exp(s - s.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)) @ v


@exercise
def attention_backward(fn):
    q, k, v, g = (random(5, 4, seed=i) for i in range(4))
    dq, dk, dv = fn(g, q, k, v)
    want = engine_grads(ops.scaled_dot_product_attention, q, k, v, g=g)
    for name, got, expected in zip(("dq", "dk", "dv"), (dq, dk, dv), want):
        compare(name, got, expected)
    gradcheck(as_op(attention_forward, fn), [leaf(q), leaf(k), leaf(v)])
    return "matches the engine's fused attention and central differences"
