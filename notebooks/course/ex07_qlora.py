"""Checks for notebook 07 (memory and QLoRA): quantizing one block of 64 weights to NF4, and merging an
adapter trained on a 4-bit base."""

import numpy as np

import lora_np
from lora_np import GPT, GPTConfig, LoraConfig, Tensor, add_lora, quantize_model, to_numpy
from lora_np.quant import NF4_CODE, nf4_quantize
from lora_np.quant.nf4 import NF4_MIDPOINTS

from . import ExerciseFailed, compare, exercise


def _divide_or_multiply(absmax):
    """Values w for which w · (1/absmax) lands on a midpoint in float32 while w / absmax does not (or the
    other way round): bitsandbytes multiplies by the reciprocal, and only these values tell the two apart."""
    inv, found = np.float32(1) / absmax, []
    for m in NF4_MIDPOINTS:
        w = np.float32(m * absmax)
        for step in (-2, -1, 0, 1, 2):
            v = w
            for _ in range(abs(step)):
                v = np.nextafter(v, np.float32(step * np.inf))
            if np.searchsorted(NF4_MIDPOINTS, np.float32(v * inv)) != np.searchsorted(NF4_MIDPOINTS, np.float32(v / absmax)):
                found.append(v)
    return np.array(found, dtype=np.float32)


def _blocks():
    """A block of small weights, a block of ties (every level and midpoint, times an absmax that is not
    1, so that w/absmax and w·(1/absmax) differ), and a block of large weights."""
    rng = np.random.default_rng(7)
    absmax = np.float32(1.3)
    ties = np.concatenate([[absmax], _divide_or_multiply(absmax), NF4_MIDPOINTS * absmax, NF4_CODE * absmax,
                           np.zeros(64)]).astype(np.float32)
    return [(rng.standard_normal(64) * 0.02).astype(np.float32), ties[:64],
            (rng.standard_normal(64) * 3).astype(np.float32)]


@exercise
def nf4_quantize_block(fn):
    for i, w in enumerate(_blocks()):
        codes, absmax = fn(w.copy())
        packed, ref_absmax = nf4_quantize(w)
        packed = np.asarray(packed)
        ref_codes = np.stack([packed >> 4, packed & 15], axis=1).reshape(-1)
        compare(f"absmax of block {i}", np.float32(absmax), ref_absmax[0], atol=0, rtol=0)
        codes = np.asarray(codes)
        if codes.shape != (64,) or not np.array_equal(codes, ref_codes):
            wrong = np.flatnonzero(codes.reshape(-1)[:64] != ref_codes[:codes.size]) if codes.size == 64 else []
            where = f" (first at index {wrong[0]}: yours {codes[wrong[0]]}, bitsandbytes' {ref_codes[wrong[0]]})" \
                if len(wrong) else f" (shape {codes.shape}, expected (64,))"
            raise ExerciseFailed(f"codes of block {i} differ from nf4_quantize's{where}; a value exactly between two "
                                 f"levels takes the lower one; scale by w · (1/absmax) in float32, as bitsandbytes "
                                 f"does (block {i}'s absmax is {float(ref_absmax[0]):.4g})")
    return "the same codes and absmax as nf4_quantize (and bitsandbytes), midpoint ties included"


@exercise
def merge_qlora(fn):
    """After QLoRA the adapter was trained against the *dequantized* 4-bit base: merging must give a
    float layer whose output is the QLoRA layer's."""
    lora_np.manual_seed(2)
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=64))
    W_float = to_numpy(model.transformer.h[0].attn.c_attn.weight.data).copy()
    quantize_model(model, "nf4")
    add_lora(model, LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"]))
    layer = model.transformer.h[0].attn.c_attn
    layer.lora_B["default"].weight.data = np.random.default_rng(3).standard_normal((192, 4)).astype(np.float32) * 0.02
    A, B, s = (to_numpy(a) if hasattr(a, "shape") else a for a in layer.factors("default"))
    merged = np.asarray(fn(W_float, layer.weight, A, B, s))
    if merged.shape != W_float.shape:
        raise ExerciseFailed(f"the merged weight has shape {merged.shape}; W is {W_float.shape} (in, out)")
    if merged.dtype != np.float32:
        raise ExerciseFailed(f"the merged weight is {merged.dtype}: a float layer, float32 like the model")
    x = np.random.default_rng(4).standard_normal((6, 64)).astype(np.float32)
    with lora_np.no_grad():
        qlora_out = to_numpy(layer(Tensor(x)).data)
    compare("x @ merged + bias against the QLoRA layer's output", x @ merged + to_numpy(layer.bias.data), qlora_out,
            atol=2e-5, rtol=1e-5)
    return "a float32 weight whose outputs equal the QLoRA layer's (dequantized base + s·AᵀBᵀ)"
