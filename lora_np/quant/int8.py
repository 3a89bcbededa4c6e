"""Blockwise absmax int8 quantization (LLM.int8()'s rounding, one absmax per block of 64).

    q = round(w · ((1 / m_b) · 127))  ∈ [-127, 127]        w ≈ (q · m_b) · (1/127)

in float32, rounding half to even (PyTorch evaluates ``127.0 / m`` as a reciprocal times 127, and
the last bit decides the ties), exactly as ``bitsandbytes.functional.int8_vectorwise_quant``
and ``int8_vectorwise_dequant`` compute it for one block per row (tests/test_quant.py compares
them with block_size = the row length). An all-zero block gets scale 0 and codes 0. Eight bits
keep the error at most m_b/254 per value, ~14× smaller than NF4's worst case, at twice the memory.
"""

import math

import numpy as np

from .. import backend
from .blocks import block_absmax, check_block_size, check_stored, chunks, float_blocks

INV_127 = np.float32(7.874015718698502e-3)  # bitsandbytes' float32 1/127


def int8_quantize(w, block_size=64):
    """(q int8 (n,), absmax float32 (n/block,)) for ``w`` of any shape with size divisible by the block."""
    xp = backend.xp
    blocks = float_blocks(w, block_size)
    absmax = block_absmax(blocks)
    q = xp.empty(blocks.size, dtype=np.int8)
    for lo, hi in chunks(blocks.shape[0], block_size):
        am = absmax[lo:hi]
        scale = xp.where(am > 0, (np.float32(1) / xp.where(am > 0, am, np.float32(1))) * np.float32(127), np.float32(0))
        q[lo * block_size:hi * block_size] = xp.rint(blocks[lo:hi] * scale[:, None]).reshape(-1).astype(np.int8)
    return q, absmax


def scale_int8(q, absmax):
    """(q · m_b) · (1/127) in float32; ``q`` (..., blocks, block), ``absmax`` (..., blocks)."""
    values = q.astype(np.float32)
    values *= absmax[..., None]
    values *= INV_127
    return values


def int8_dequantize(q, absmax, shape, block_size=64):
    """The float32 tensor of ``shape`` that ``q`` and ``absmax`` encode."""
    shape = tuple(int(n) for n in shape)
    check_block_size(block_size, shape)
    n = math.prod(shape)
    q = check_stored("int8 codes", backend.xp.asarray(q), n, np.int8)
    absmax = check_stored("absmax", backend.xp.asarray(absmax), n // block_size, np.float32)
    return scale_int8(q.reshape(-1, block_size), absmax).reshape(shape)
