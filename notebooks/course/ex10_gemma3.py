"""Checks for notebook 10 (from Llama to Gemma 3): the (1 + w) RMSNorm's backward, GeGLU's backward,
the sliding-window mask of one block of the memory-efficient attention, and the scaled embedding.
The engine is lora_np's Gemma 3 (``lora_np.models.gemma3``: ``GemmaRMSNorm``, ``Gemma3MLP``'s
``ops.geglu``, ``Gemma3.embed``) and the attention kernels' own mask (``attention_blocks.KeyMask``);
the gradients are also compared with central differences."""

import math

import ml_dtypes
import numpy as np

from lora_np import gradcheck, ops
from lora_np.autograd import Tensor
from lora_np.models.gemma3 import Gemma3, Gemma3Config, Gemma3MLP, GemmaRMSNorm
from lora_np.ops.attention_blocks import KeyMask, key_blocks

from . import ExerciseFailed, as_op, compare, exercise, leaf, random
from .ex01_autograd import engine_grads
from .ex02_transformer import gelu_forward

EPS = 1e-6


def gemma_rms_norm_forward(x, w, eps=EPS):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * (1 + w)


def reject_named_slips(what, got, slips):
    """ExerciseFailed naming the slip when ``got`` equals one of ``slips`` ({what it is: its value})."""
    got = np.asarray(got, dtype=np.float64)
    for name, value in slips.items():
        value = np.asarray(value, dtype=np.float64)
        if got.shape == value.shape and np.allclose(got, value, rtol=1e-9, atol=1e-12):
            raise ExerciseFailed(f"{what} is {name}")


def engine_gemma_rms_norm(x, w):
    """Gemma 3's own norm module, its stored weight replaced by the leaf ``w``."""
    norm = GemmaRMSNorm(x.shape[-1], EPS, dtype=np.float64)
    norm.weight = w
    return norm(x)


@exercise
def gemma_rms_norm_backward(fn):
    x = random(2, 3, 6) * 3 + 1              # (B, T, C): dw sums over every row; a mean far from 0
    x[1, 2] *= 1e-3                          # one row of RMS ~1e-3, where eps counts
    w, g = random(6, seed=1) * 0.5, random(2, 3, 6, seed=2)   # w ≠ 0: (1 + w) is neither w nor 1
    dx, dw = fn(g, x, w)
    want = engine_grads(engine_gemma_rms_norm, x, w, g=g)

    def rms_dx(weight, eps=EPS):
        return engine_grads(lambda x: ops.rms_norm(x, Tensor(weight), eps=eps), x, g=g)[0]
    reject_named_slips("dx", dx, {"Llama's RMSNorm backward with weight w: Gemma's weight is 1 + w": rms_dx(w),
                                  "the backward with weight 1: w dropped (1 + w is 1 only at initialisation)":
                                      rms_dx(np.ones_like(w)),
                                  "the backward without eps (the row of RMS 1e-3 shows it)": rms_dx(1 + w, 0.0)})
    compare("dx", dx, want[0])
    compare("dw", dw, want[1])
    gradcheck(as_op(gemma_rms_norm_forward, fn), [leaf(x), leaf(w)])
    return "matches Gemma 3's GemmaRMSNorm and central differences"


def geglu_forward(a, b):
    return gelu_forward(a) * b


@exercise
def geglu_backward(fn):
    a, b, g = random(4, 6) * 2.5, random(4, 6, seed=1), random(4, 6, seed=2)   # both tails of tanh
    da, db = fn(g, a, b)
    want = engine_grads(Gemma3MLP.glu, a, b, g=g)
    phi = 0.5 * (1 + np.vectorize(math.erf)(a / math.sqrt(2)))
    reject_named_slips("da", da, {"the exact (erf) GELU's: Gemma's hidden_activation is gelu_pytorch_tanh":
                                      g * b * (phi + a * np.exp(-a * a / 2) / math.sqrt(2 * math.pi)),
                                  "SwiGLU's (SiLU's derivative): Gemma's gate is a GELU":
                                      engine_grads(ops.swiglu, a, b, g=g)[0]})
    compare("da (the gate's gradient)", da, want[0])
    compare("db (the up projection's gradient)", db, want[1])
    gradcheck(as_op(geglu_forward, fn), [leaf(a), leaf(b)])
    return "matches Gemma 3's GeGLU (ops.geglu) and central differences"


# ---------------------------------------------------------------- the sliding window, block by block

def engine_block_mask(a, c, rows, cols, offset, window):
    """The memory-efficient kernels' own mask for one block: True where the key is seen."""
    return np.isfinite(KeyMask(offset, window).add_to(np.zeros((rows, cols)), a, c))


def _named_slips(a, c, rows, cols, offset, window):
    """The masks the common slips give, by name (the check says which one an answer is)."""
    i, j = np.arange(rows)[:, None], np.arange(cols)[None, :]
    query, key = a + i + offset, c + j
    return {"the window holds W + 1 keys (j ≥ i - W): the key W positions back is hidden, its bound strict":
            (key >= query - window) & (key <= query),
            "later keys are seen: the causal bound j ≤ i is missing": key > query - window,
            "the window is ignored: that is plain causal attention, every earlier key seen": key <= query,
            "the query's position ignores the offset T_k - T_q (with a KV cache the queries are the last "
            "T_q positions)": (key > a + i - window) & (key <= a + i),
            "the block's origin is ignored: row r is query a + r and column j is key c + j":
            (j > i + offset - window) & (j <= i + offset)}


def _blocks_to_try(t_q, t_k, window, rows=3, cols=4):
    mask = KeyMask(t_k - t_q, window)
    return [(a, c, b - a, min(c + cols, e) - c) for a, b, first, e in mask.blocks(t_q, t_k, rows)
            for c in range(first, e, cols)]


def block_attention(q, k, v, seen_fn, window, rows=3, cols=4):
    """The memory-efficient attention's forward (flash_attention.py's online softmax), with the mask of
    each block from ``seen_fn(a, c, rows, cols, offset, window)``; q, k, v (T, d), q the last T_q of
    the T_k positions; ``cols`` ≥ ``rows``."""
    t_q, t_k, d = q.shape[0], k.shape[0], q.shape[1]
    mask, y = KeyMask(t_k - t_q, window), np.zeros_like(q)
    for a, b, first, e in mask.blocks(t_q, t_k, rows):          # query rows [a, b), keys [first, e) only
        m, total, acc = np.full((b - a, 1), -np.inf), np.zeros((b - a, 1)), np.zeros((b - a, d))
        for c, f in key_blocks(first, e, cols):              # from the diagonal back: the first block holds
            s = np.where(seen_fn(a, c, b - a, f - c, t_k - t_q, window),  # every row's own key, so m is finite
                         q[a:b] @ k[c:f].T / math.sqrt(d), -np.inf)
            m_new = np.maximum(m, s.max(axis=1, keepdims=True))
            p, rescale = np.exp(s - m_new), np.exp(m - m_new)
            total, acc, m = rescale * total + p.sum(axis=1, keepdims=True), rescale * acc + p @ v[c:f], m_new
        y[a:b] = acc / total
    return y


@exercise
def window_block_mask(fn):
    tried = 0
    for t_q, t_k, window in ((9, 9, 3), (5, 11, 4), (7, 7, 1)):      # the prompt; a KV cache; W = 1
        for a, c, rows, cols in _blocks_to_try(t_q, t_k, window):
            got = np.asarray(fn(a, c, rows, cols, t_k - t_q, window))
            want = engine_block_mask(a, c, rows, cols, t_k - t_q, window)
            where = (f"block of query rows {a}..{a + rows - 1}, keys {c}..{c + cols - 1} "
                     f"(T_q={t_q}, T_k={t_k}, W={window})")
            if got.shape != want.shape:
                raise ExerciseFailed(f"{where}: shape {got.shape}; expected (rows, cols) = {want.shape}")
            if got.dtype != bool:
                raise ExerciseFailed(f"{where}: dtype {got.dtype}; return booleans (True: the key is seen)")
            if not np.array_equal(got, want):
                slip = [name for name, m in _named_slips(a, c, rows, cols, t_k - t_q, window).items()
                        if np.array_equal(got, m)]
                r, j = (int(n[0]) for n in np.nonzero(got != want))
                raise ExerciseFailed(f"{where}: query {a + r + t_k - t_q} (row {a + r}) and key {c + j}: yours says "
                                     f"{'seen' if got[r, j] else 'hidden'}, the engine "
                                     f"{'seen' if want[r, j] else 'hidden'}" + (f" — {slip[0]}" if slip else ""))
            tried += 1
    q, k, v = random(5, 4), random(11, 4, seed=1), random(11, 4, seed=2)
    want = ops.scaled_dot_product_attention(leaf(q)[None], leaf(k)[None], leaf(v)[None], window=4, flash_min_t=1)
    compare("block attention with your mask (T_q=5, T_k=11, W=4)", block_attention(q, k, v, fn, 4), want.data[0])
    return (f"equals the engine's mask on {tried} blocks, and the block attention built on it equals "
            f"the memory-efficient kernel's")


# ---------------------------------------------------------------- the scaled embedding

def _engine_embed(ids, table):
    """Gemma3.embed of a one-layer Gemma 3 whose embedding table is ``table`` (float32 or float64)."""
    V, C = table.shape
    model = Gemma3(Gemma3Config(vocab_size=V, hidden_size=C, intermediate_size=8, num_hidden_layers=1,
                                num_attention_heads=1, num_key_value_heads=1, head_dim=4,
                                max_position_embeddings=8, sliding_window=4), dtype=table.dtype.type)
    model.model.embed_tokens.weight.data[...] = table
    return model.embed(ids).data


def transformers_embed(ids, table):
    """transformers' Gemma3TextScaledWordEmbedding: ``embedding(ids) * embed_scale.to(weight.dtype)``,
    the scale √C rounded to the table's dtype, the product in that dtype (bfloat16 here)."""
    return table[ids] * table.dtype.type(math.sqrt(table.shape[1]))


@exercise
def scaled_embedding(fn):
    V, C = 11, 640                                  # Gemma 3 270M's width: √640 is 25.298…, 25.25 in bfloat16
    ids = np.array([[3, 1, 4, 1], [5, 9, 2, 6]])
    table64 = random(V, C, seed=4) / math.sqrt(C)   # rows of norm about 1, as Gemma's are
    tables = [("bfloat16", table64.astype(ml_dtypes.bfloat16), transformers_embed),
              ("float32", table64.astype(np.float32), _engine_embed),
              ("float64", table64, _engine_embed)]
    for name, table, engine in tables:
        got = np.asarray(fn(ids, table))
        if got.dtype != table.dtype:
            raise ExerciseFailed(f"for a {name} table yours returns {got.dtype}: the product was promoted (a NumPy "
                                 f"float64 scalar such as np.sqrt(...) is not cast down, a Python float is)")
        rows, root, in_dtype = table[ids], math.sqrt(C), table.dtype.type
        slips = {"the table's rows unscaled (Llama's embedding)": rows, "the rows times C, not √C": rows * in_dtype(C),
                 "the rows divided by √C, not multiplied": rows / in_dtype(root)}
        if name == "bfloat16":
            slips["the rows times √C in float32, rounded after: √640 is 25.25 in bfloat16, and transformers rounds "
                  "the scale to the table's dtype first"] = (rows.astype(np.float32) * np.float32(root)
                                                             ).astype(table.dtype)
        reject_named_slips(f"the rows of a {name} table", got, slips)
        compare(f"the rows of a {name} table (bit for bit)", got.astype(np.float64),
                engine(ids, table).astype(np.float64), atol=0, rtol=0)
    return "bit-equal to Gemma3.embed (float32, float64) and to transformers' rule in bfloat16"
