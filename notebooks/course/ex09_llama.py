"""Checks for notebook 09 (from GPT-2 to Llama): RMSNorm's backward, rotary position embedding
forward and backward, and SwiGLU's backward. Each is compared with the engine (the fused op where
lora_np has it, else the op composed from primitive engine ops) and with central differences."""

import numpy as np

from lora_np import gradcheck, ops
from lora_np.autograd import Tensor

from . import as_op, compare, exercise, leaf, random
from .ex01_autograd import engine_grads
from .ex02_transformer import Taps, attention_forward, cmp_all

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


# A whole Llama decoder layer, backward by hand: the learner assembles it from the backward passes of
# this notebook (and attention's from notebook 02); the check compares every intermediate and every
# parameter gradient with the engine's fused ops (rms_norm, rope, grouped attention, swiglu).

N_HEAD, N_KV_HEAD = 4, 2


def llama_layer_parameters(C=16, hidden=24, seed=0):
    """One Llama decoder layer's parameters in float64, Hugging Face's names and (out, in) layouts."""
    rng, d = np.random.default_rng(seed), C // N_HEAD
    p = {"input_layernorm.weight": 1 + 0.1 * rng.standard_normal(C),
         "post_attention_layernorm.weight": 1 + 0.1 * rng.standard_normal(C)}
    for name, (d_out, d_in) in (("self_attn.q_proj", (N_HEAD * d, C)), ("self_attn.k_proj", (N_KV_HEAD * d, C)),
                                ("self_attn.v_proj", (N_KV_HEAD * d, C)), ("self_attn.o_proj", (C, N_HEAD * d)),
                                ("mlp.gate_proj", (hidden, C)), ("mlp.up_proj", (hidden, C)),
                                ("mlp.down_proj", (C, hidden))):
        p[f"{name}.weight"] = rng.standard_normal((d_out, d_in)) / np.sqrt(d_in)
    return p


def llama_layer_forward(x, p, cos, sin):
    """out = x1 + mlp(post_attention_layernorm(x1)), x1 = x + o_proj(attn(input_layernorm(x))), for one
    sequence x (T, C); a linear layer is h @ W.T (W is (out, in)); returns (out, cache)."""
    T, C = x.shape
    d = p["self_attn.q_proj.weight"].shape[0] // N_HEAD
    c = {"x": x}
    c["h1"] = rms_norm_forward(x, p["input_layernorm.weight"])
    c["q"], c["k"], c["v"] = ((c["h1"] @ p[f"self_attn.{n}_proj.weight"].T).reshape(T, -1, d).transpose(1, 0, 2)
                              for n in "qkv")                                    # (H, T, d), (H_kv, T, d)
    c["q_rot"], c["k_rot"] = rope_forward(c["q"], cos, sin), rope_forward(c["k"], cos, sin)
    G = N_HEAD // N_KV_HEAD                                                       # query head h reads K/V head h // G
    heads = [attention_forward(c["q_rot"][h], c["k_rot"][h // G], c["v"][h // G]) for h in range(N_HEAD)]
    c["att"] = np.concatenate(heads, axis=1)                                      # (T, H·d)
    c["x1"] = x + c["att"] @ p["self_attn.o_proj.weight"].T
    c["h2"] = rms_norm_forward(c["x1"], p["post_attention_layernorm.weight"])
    c["a"], c["b"] = c["h2"] @ p["mlp.gate_proj.weight"].T, c["h2"] @ p["mlp.up_proj.weight"].T
    c["m"] = silu(c["a"]) * c["b"]
    return c["x1"] + c["m"] @ p["mlp.down_proj.weight"].T, c


LAYER_INTERMEDIATES = ("m", "a", "b", "h2", "x1", "att", "q_rot", "k_rot", "q", "k", "v", "h1", "x")


def engine_llama_layer_grads(x, p, cos, sin, g):
    """The engine's output and gradient of every intermediate and parameter, for upstream gradient ``g``."""
    c, params = Taps(), {k: leaf(v) for k, v in p.items()}
    T, C = x.shape
    d = p["self_attn.q_proj.weight"].shape[0] // N_HEAD
    c["x"] = leaf(x)
    c["h1"] = ops.rms_norm(c["x"], params["input_layernorm.weight"], eps=EPS)
    for n in "qkv":
        c[n] = (c["h1"] @ params[f"self_attn.{n}_proj.weight"].T).reshape(T, -1, d).transpose((1, 0, 2))
    c["q_rot"], c["k_rot"] = ops.rope(c["q"], cos, sin), ops.rope(c["k"], cos, sin)
    att = ops.scaled_dot_product_attention(c["q_rot"], c["k_rot"], c["v"])      # grouped: K/V heads broadcast
    c["att"] = att.transpose((1, 0, 2)).reshape(T, N_HEAD * d)
    c["x1"] = c["x"] + c["att"] @ params["self_attn.o_proj.weight"].T
    c["h2"] = ops.rms_norm(c["x1"], params["post_attention_layernorm.weight"], eps=EPS)
    c["a"], c["b"] = c["h2"] @ params["mlp.gate_proj.weight"].T, c["h2"] @ params["mlp.up_proj.weight"].T
    c["m"] = ops.swiglu(c["a"], c["b"])
    out = c["x1"] + c["m"] @ params["mlp.down_proj.weight"].T
    out.backward(g)
    return out.data, {**c.grads, **{k: t.grad for k, t in params.items()}}


@exercise
def llama_layer_backward(fn):
    p = llama_layer_parameters()
    x, g = random(6, 16, seed=11), random(6, 16, seed=12)
    cos, sin = rope_tables(6, 4)
    out, cache = llama_layer_forward(x, p, cos, sin)
    engine_out, want = engine_llama_layer_grads(x, p, cos, sin, g)
    compare("llama_layer_forward's output against the engine's", out, engine_out)
    names = (*LAYER_INTERMEDIATES, *p)
    cmp_all(fn(g, cache, p, cos, sin), want, names, label=lambda k: f"d{k}" if k in LAYER_INTERMEDIATES else k)
    gradcheck(as_op(lambda x: llama_layer_forward(x, p, cos, sin)[0],
                    lambda g, x: fn(g, llama_layer_forward(x, p, cos, sin)[1], p, cos, sin)["x"]), [leaf(x)])
    return (f"all {len(LAYER_INTERMEDIATES)} intermediates and {len(p)} parameters equal the engine's; "
            f"dx equals central differences")
