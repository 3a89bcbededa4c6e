"""Checks for notebook 07 (memory and QLoRA): quantizing one block of 64 weights to NF4."""

import numpy as np

from lora_np.quant import NF4_CODE, nf4_quantize
from lora_np.quant.nf4 import NF4_MIDPOINTS

from . import ExerciseFailed, compare, exercise


def _blocks():
    rng = np.random.default_rng(7)
    ties = np.concatenate([[1.0], NF4_MIDPOINTS, NF4_CODE, -NF4_MIDPOINTS[:14], np.zeros(18)]).astype(np.float32)
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
                                 f"levels takes the lower one")
    return "the same codes and absmax as nf4_quantize (and bitsandbytes), midpoint ties included"
