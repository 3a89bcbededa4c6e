"""Checks for notebook 09 (from GPT-2 to Llama): RMSNorm's backward, rotary position embedding
forward and backward, and SwiGLU's backward. Each is compared with the engine (the fused op where
lora_np has it, else the op composed from primitive engine ops) and with central differences."""

import numpy as np

from lora_np import gradcheck, ops
from lora_np.autograd import Tensor

from . import as_op, compare, exercise, leaf, random
from .ex01_autograd import engine_grads

EPS = 1e-6


def rms_norm_forward(x, w, eps=EPS):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def engine_rms_norm(x, w):
    """The fused op when the library has it, else composed from primitive ops (each with its own backward)."""
    if hasattr(ops, "rms_norm"):
        return ops.rms_norm(x, w, eps=EPS)
    return x / ((x * x).mean(axis=-1, keepdims=True) + EPS).sqrt() * w


@exercise
def rms_norm_backward(fn):
    x, w, g = random(4, 6) * 3 + 1, random(6, seed=1), random(4, 6, seed=2)   # a mean far from 0: RMS is not LN
    dx, dw = fn(g, x, w)
    want = engine_grads(engine_rms_norm, x, w, g=g)
    compare("dx", dx, want[0])
    compare("dw", dw, want[1])
    gradcheck(as_op(rms_norm_forward, fn), [leaf(x), leaf(w)])
    return "matches the engine's rms_norm and central differences"


def rope_tables(T, d, base=10000.0):
    """cos θ and sin θ, (T, d/2): pair i at position p turns by θ = p / base^(2i/d)."""
    inv_freq = base ** (-np.arange(0, d, 2) / d)
    theta = np.arange(T)[:, None] * inv_freq[None, :]
    return np.cos(theta), np.sin(theta)


def rotate_half(x):
    h = x.shape[-1] // 2
    return np.concatenate([-x[..., h:], x[..., :h]], axis=-1)


def rope_forward(x, cos, sin):
    """transformers' convention: y = x ⊙ [cos, cos] + rotate_half(x) ⊙ [sin, sin]."""
    c, s = np.concatenate([cos, cos], -1), np.concatenate([sin, sin], -1)
    return x * c + rotate_half(x) * s


def engine_rope(x, cos, sin):
    if hasattr(ops, "rope"):
        return ops.rope(x, cos, sin)
    h = x.shape[-1] // 2
    c, s = Tensor(np.concatenate([cos, cos], -1)), Tensor(np.concatenate([sin, sin], -1))
    return x * c + ops.concatenate([-x[..., h:], x[..., :h]], axis=-1) * s


@exercise
def rope(fn):
    x = random(2, 5, 8)                  # (heads, T, d): pairs (x[i], x[i + 4]), not neighbours
    cos, sin = rope_tables(5, 8)
    compare("y", fn(x, cos, sin), engine_rope(Tensor(x), cos, sin).data)
    q, k = random(8, seed=1), random(8, seed=2)
    cos9, sin9 = rope_tables(9, 8)
    scores = [fn(np.stack([q] * 9), cos9, sin9)[p] @ fn(np.stack([k] * 9), cos9, sin9)[p - 3] for p in range(3, 9)]
    compare("q·k at positions (p, p - 3) for every p (it must depend on the offset only)",
            np.array(scores), np.full(6, scores[0]))
    return "equals the engine's rope; the score of two rotated vectors depends only on their distance"


@exercise
def rope_backward(fn):
    x, g = random(2, 5, 8), random(2, 5, 8, seed=3)
    cos, sin = rope_tables(5, 8)
    compare("dx", fn(g, cos, sin), engine_grads(lambda t: engine_rope(t, cos, sin), x, g=g)[0])
    gradcheck(as_op(lambda x: rope_forward(x, cos, sin), lambda g, x: fn(g, cos, sin)), [leaf(x)])
    return "matches the engine and central differences: the inverse rotation"


def silu(a):
    return a / (1 + np.exp(-a))


def engine_swiglu(a, b):
    if hasattr(ops, "swiglu"):
        return ops.swiglu(a, b)
    return a / (ops.exp(-a) + 1.0) * b


@exercise
def swiglu_backward(fn):
    a, b, g = random(4, 6) * 2, random(4, 6, seed=1), random(4, 6, seed=2)
    da, db = fn(g, a, b)
    want = engine_grads(engine_swiglu, a, b, g=g)
    compare("da (the gate's gradient)", da, want[0])
    compare("db (the up projection's gradient)", db, want[1])
    gradcheck(as_op(lambda a, b: silu(a) * b, fn), [leaf(a), leaf(b)])
    return "matches the engine's swiglu and central differences"


@exercise
def gqa_kv_backward(fn):
    """Grouped-query attention shares each K/V head with G consecutive query heads (query head h reads
    K/V head h // G). Given the gradient each query head sends to its copy of K, (H, T, d), return the
    gradient of the shared K, (H_kv, T, d)."""
    H, H_kv, T, d = 6, 2, 4, 3
    q, k, v, g = random(H, T, d), random(H_kv, T, d, seed=1), random(H_kv, T, d, seed=2), random(H, T, d, seed=3)
    copies = leaf(np.repeat(k, H // H_kv, axis=0))          # each query head's own copy of its K/V head
    ops.scaled_dot_product_attention(leaf(q), copies, leaf(np.repeat(v, H // H_kv, axis=0))).backward(g)
    dk = fn(np.asarray(copies.grad), H_kv)
    compare("dk", dk, engine_grads(ops.scaled_dot_product_attention, q, k, v, g=g)[1])
    gradcheck(as_op(lambda k: np.repeat(k, H // H_kv, axis=0), lambda g, k: fn(g, H_kv)), [leaf(k)])
    return "equals the engine's grouped attention gradient and central differences (a sum over each group)"
