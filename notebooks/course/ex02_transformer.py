"""Checks for notebook 02 (the transformer): layer norm, GELU and causal attention backward, and a
whole block's backward assembled from them, compared intermediate by intermediate with the engine."""

import math

import numpy as np

from lora_np import gradcheck, ops
from lora_np.autograd import Tensor
from lora_np.ops.softmax import softmax_array

from . import ExerciseFailed, as_op, cmp, compare, exercise, leaf, random
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


# A whole block, backward by hand ("becoming a backprop ninja"): the learner assembles it from the
# three backward passes above, and the check compares every intermediate gradient with the engine's.

N_HEAD = 2


def block_parameters(C=8, seed=0):
    """One GPT-2 block's parameters in float64, GPT-2's names and (in, out) layouts."""
    rng = np.random.default_rng(seed)
    p = {"ln_1.weight": 1 + 0.1 * rng.standard_normal(C), "ln_1.bias": 0.1 * rng.standard_normal(C),
         "ln_2.weight": 1 + 0.1 * rng.standard_normal(C), "ln_2.bias": 0.1 * rng.standard_normal(C)}
    for name, (d_in, d_out) in (("attn.c_attn", (C, 3 * C)), ("attn.c_proj", (C, C)),
                                ("mlp.c_fc", (C, 4 * C)), ("mlp.c_proj", (4 * C, C))):
        p[f"{name}.weight"] = rng.standard_normal((d_in, d_out)) / np.sqrt(d_in)
        p[f"{name}.bias"] = 0.1 * rng.standard_normal(d_out)
    return p


def heads(t, n_head=N_HEAD):
    """(T, C) -> a list of n_head (T, C/n_head) slices: head i owns channels i·d ... (i+1)·d - 1."""
    d = t.shape[1] // n_head
    return [t[:, i * d:(i + 1) * d] for i in range(n_head)]


def block_forward(x, p):
    """out = x1 + mlp(ln_2(x1)), x1 = x + attn(ln_1(x)), for one sequence x (T, C); returns
    (out, cache) with every intermediate the backward needs."""
    c = {"x": x}
    c["h1"] = layer_norm_forward(x, p["ln_1.weight"], p["ln_1.bias"])
    c["qkv"] = c["h1"] @ p["attn.c_attn.weight"] + p["attn.c_attn.bias"]            # (T, 3C)
    q, k, v = np.split(c["qkv"], 3, axis=1)
    c["att"] = np.concatenate([attention_forward(*qkv) for qkv in zip(heads(q), heads(k), heads(v))], axis=1)
    c["x1"] = x + c["att"] @ p["attn.c_proj.weight"] + p["attn.c_proj.bias"]
    c["h2"] = layer_norm_forward(c["x1"], p["ln_2.weight"], p["ln_2.bias"])
    c["f"] = c["h2"] @ p["mlp.c_fc.weight"] + p["mlp.c_fc.bias"]                    # (T, 4C)
    c["u"] = gelu_forward(c["f"])
    out = c["x1"] + c["u"] @ p["mlp.c_proj.weight"] + p["mlp.c_proj.bias"]
    return out, c


INTERMEDIATES = ("u", "f", "h2", "x1", "att", "qkv", "h1", "x")


def _tap(name, t, grads):
    """The identity, whose backward records the gradient flowing through it (what makemore's
    ``retain_grad`` does): the engine's intermediate gradients, for ``cmp``."""
    def backward(g):
        grads[name] = g.copy()
        return (g,)
    return Tensor._from_op(t.data, (t,), backward)


def engine_block_grads(x, p, g):
    """The engine's gradient of every intermediate and parameter, for upstream gradient ``g``."""
    grads, params = {}, {k: leaf(v) for k, v in p.items()}
    tx = _tap("x", leaf(x), grads)
    h1 = _tap("h1", ops.layer_norm(tx, params["ln_1.weight"], params["ln_1.bias"]), grads)
    qkv = _tap("qkv", h1 @ params["attn.c_attn.weight"] + params["attn.c_attn.bias"], grads)
    T, C3 = qkv.shape
    C, d = C3 // 3, C3 // 3 // N_HEAD
    q, k, v = (t.reshape(T, N_HEAD, d).transpose((1, 0, 2)) for t in ops.split(qkv, 3, axis=1))  # (H, T, d)
    att = ops.scaled_dot_product_attention(q, k, v).transpose((1, 0, 2)).reshape(T, C)
    att = _tap("att", att, grads)
    x1 = _tap("x1", tx + att @ params["attn.c_proj.weight"] + params["attn.c_proj.bias"], grads)
    h2 = _tap("h2", ops.layer_norm(x1, params["ln_2.weight"], params["ln_2.bias"]), grads)
    f = _tap("f", h2 @ params["mlp.c_fc.weight"] + params["mlp.c_fc.bias"], grads)
    u = _tap("u", ops.gelu(f), grads)
    out = x1 + u @ params["mlp.c_proj.weight"] + params["mlp.c_proj.bias"]
    out.backward(g)
    grads.update((k, t.grad) for k, t in params.items())
    return out.data, grads


@exercise
def block_backward(fn):
    p = block_parameters()
    x, g = random(5, 8, seed=11), random(5, 8, seed=12)
    out, cache = block_forward(x, p)
    engine_out, want = engine_block_grads(x, p, g)
    compare("block_forward's output against the engine's", out, engine_out)
    cmp_all(fn(g, cache, p), want, (*INTERMEDIATES, *p), label=lambda k: f"d{k}" if k in INTERMEDIATES else k)
    gradcheck(as_op(lambda x: block_forward(x, p)[0], lambda g, x: fn(g, block_forward(x, p)[1], p)["x"]), [leaf(x)])
    return f"all {len(INTERMEDIATES)} intermediates and {len(p)} parameters equal the engine's; dx equals central differences"


@exercise
def embedding_backward(fn):
    """dW for y = W[ids]: every position's gradient row added into the row of its token, repeats summed
    (ids below repeat tokens within a row and across the batch, so an assignment cannot pass)."""
    V, C = 7, 3
    ids = np.array([[1, 4, 1, 0], [4, 4, 6, 1]])
    W, g = random(V, C), random(2, 4, C, seed=1)
    dW = fn(g, ids, V)
    compare("dW", dW, engine_grads(lambda w: ops.embedding(ids, w), W, g=g)[0])
    gradcheck(as_op(lambda w: w[ids], lambda g, w: fn(g, ids, V)), [leaf(W)])
    return "matches the engine's embedding and central differences (repeated tokens summed)"


# Layer norm and attention in atomic steps (makemore part 4's "exercise 1"): the forward is written
# once, for arrays and for Tensors alike; the check runs it on Tensors with a cache that records the
# gradient reaching every step, and compares the learner's gradients with those, one ``cmp`` line each.

class Taps(dict):
    """A cache whose every entry is tapped (``_tap``): ``grads[name]`` holds the gradient that reached
    ``cache[name]`` once backward has run."""

    def __init__(self):
        super().__init__()
        self.grads = {}

    def __setitem__(self, name, t):
        super().__setitem__(name, _tap(name, t, self.grads))


def layer_norm_steps(x, w, b, cache=None):
    """Layer norm in seven atomic steps over the last axis, x (N, C); returns (y, cache). ``cache``
    is the dict to fill (the check passes one that records the engine's gradients)."""
    c = {} if cache is None else cache
    c["x"] = x
    c["mu"] = c["x"].mean(-1, keepdims=True)            # (N, 1)
    c["xc"] = c["x"] - c["mu"]                          # (N, C)
    c["xc2"] = c["xc"] ** 2                             # (N, C)
    c["var"] = c["xc2"].mean(-1, keepdims=True)         # (N, 1)  the biased variance
    c["rstd"] = (c["var"] + EPS) ** -0.5                # (N, 1)
    c["xhat"] = c["xc"] * c["rstd"]                     # (N, C)
    return c["xhat"] * w + b, c


LN_STEPS = ("w", "b", "xhat", "rstd", "var", "xc2", "xc", "mu", "x")   # in backward order


def cmp_all(mine, want, names, label=lambda k: f"d{k}"):
    """cmp on every name, in order; ExerciseFailed naming the wrong ones (the first is the mistake)."""
    missing = [k for k in names if k not in mine]
    if missing:
        raise ExerciseFailed(f"your dict has no gradient for {missing}; it needs {list(names)}")
    wrong = [k for k in names if not cmp(label(k), mine[k], want[k])]
    if wrong:
        raise ExerciseFailed(f"wrong: {wrong} (the first, in backward order, is where the mistake is)")


@exercise
def layer_norm_steps_backward(fn):
    x, w, b, g = random(4, 6) * 3 + 1, random(6, seed=1), random(6, seed=2), random(4, 6, seed=3)
    taps, tw, tb = Taps(), leaf(w), leaf(b)
    layer_norm_steps(leaf(x), tw, tb, taps)[0].backward(g)
    want = {**taps.grads, "w": tw.grad, "b": tb.grad}
    cmp_all(fn(g, layer_norm_steps(x, w, b)[1], w), want, LN_STEPS)
    compare("dx against the fused ops.layer_norm", fn(g, layer_norm_steps(x, w, b)[1], w)["x"],
            engine_grads(ops.layer_norm, x, w, b, g=g)[0])
    gradcheck(as_op(lambda x, w, b: layer_norm_steps(x, w, b)[0],
                    lambda g, x, w, b: tuple(fn(g, layer_norm_steps(x, w, b)[1], w)[k] for k in ("x", "w", "b"))),
              [leaf(x), leaf(w), leaf(b)])
    return (f"all {len(LN_STEPS)} gradients equal the engine's on the same steps; dx the fused op's and "
            f"central differences")


def attention_steps(q, k, v, cache=None, softmax=softmax_array):
    """Causal attention for H heads in atomic steps: q, k, v (H, T, d) -> (T, H·d), the heads merged
    side by side (head h owns columns h·d ... (h+1)·d - 1); returns (y, cache). The check passes
    Tensors, ``ops.softmax`` and a recording cache."""
    c = {} if cache is None else cache
    c["q"], c["k"], c["v"] = q, k, v
    H, T, d = q.shape
    c["scores"] = c["q"] @ c["k"].swapaxes(-1, -2)                   # (H, T, T)
    c["scaled"] = c["scores"] * (1.0 / math.sqrt(d))
    c["masked"] = c["scaled"] + np.triu(np.full((T, T), -np.inf), k=1)
    c["probs"] = softmax(c["masked"], axis=-1)                       # (H, T, T), rows sum to 1
    c["out"] = c["probs"] @ c["v"]                                   # (H, T, d)
    return c["out"].transpose((1, 0, 2)).reshape(T, H * d), c        # merge heads: (T, H, d) -> (T, H·d)


ATTENTION_STEPS = ("out", "probs", "v", "masked", "scaled", "scores", "q", "k")   # in backward order


@exercise
def attention_steps_backward(fn):
    q, k, v = random(3, 5, 4), random(3, 5, 4, seed=1), random(3, 5, 4, seed=2)    # H=3, T=5, d=4
    g = random(5, 12, seed=3)
    taps = Taps()
    attention_steps(leaf(q), leaf(k), leaf(v), taps, softmax=ops.softmax)[0].backward(g)
    cmp_all(fn(g, attention_steps(q, k, v)[1]), taps.grads, ATTENTION_STEPS)

    def backward(g, q, k, v):
        grads = fn(g, attention_steps(q, k, v)[1])
        return grads["q"], grads["k"], grads["v"]
    gradcheck(as_op(lambda q, k, v: attention_steps(q, k, v)[0], backward), [leaf(q), leaf(k), leaf(v)])
    return f"all {len(ATTENTION_STEPS)} gradients equal the engine's on the same steps, and central differences"
