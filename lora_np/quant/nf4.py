"""4-bit NormalFloat (NF4) quantization, byte for byte as ``bitsandbytes.functional.quantize_4bit``.

    nf4_quantize(w, block_size=64)                    -> (packed uint8 (n/2,), absmax float32 (n/block,))
    nf4_dequantize(packed, absmax, shape, block_size) -> float32 array of ``shape``

Each block of 64 values is scaled by 1/absmax (bitsandbytes multiplies by the float32 reciprocal,
clamping absmax at 1e-38 so an all-zero block maps to 0) and each scaled value x ∈ [-1, 1] gets
the index of the nearest NF4 level (``codebooks.NF4_CODE``). Nearest is decided against the 15
float32 midpoints between neighbouring levels; a value exactly on a midpoint takes the *lower*
index (``torch.bucketize``'s right=False, here ``searchsorted(side="left")``).

Packing: the flattened (row-major) codes go two to a byte, the first in the high nibble:
byte k = q[2k] << 4 | q[2k+1]. Dequantizing is code[q] · absmax in float32; here one gather from a
256-entry table of (code[hi], code[lo]) float pairs decodes a whole byte at once.
"""

import math

import numpy as np

from .. import backend
from .blocks import block_absmax, check_block_size, check_stored, chunks, float_blocks
from .codebooks import NF4_CODE

NF4_MIDPOINTS = (NF4_CODE[:-1] + NF4_CODE[1:]) / np.float32(2)
_PAIRS = np.stack([np.repeat(NF4_CODE, 16), np.tile(NF4_CODE, 16)], axis=1)  # byte -> (code[hi], code[lo])
NF4_BYTE_TABLE = np.ascontiguousarray(_PAIRS, dtype=np.float32).view(np.uint64).reshape(256)


def nf4_codes(scaled):
    """Index of the nearest NF4 level for values in [-1, 1] (ties to the lower index)."""
    xp = backend.xp
    return xp.searchsorted(xp.asarray(NF4_MIDPOINTS), scaled, side="left").astype(np.uint8)


def pack_nibbles(codes):
    """(n,) codes < 16 -> (n/2,) bytes, the first of each pair in the high nibble."""
    codes = codes.reshape(-1)
    return (codes[0::2] << 4) | codes[1::2]


def nf4_quantize(w, block_size=64):
    """(packed, absmax) of ``w`` (any shape, size divisible by ``block_size``), as bitsandbytes packs it."""
    xp = backend.xp
    blocks = float_blocks(w, block_size, "tensor", even=True)
    absmax = block_absmax(blocks)
    packed = xp.empty(blocks.size // 2, dtype=np.uint8)
    half = block_size // 2
    for lo, hi in chunks(blocks.shape[0], block_size):
        inv = np.float32(1) / xp.maximum(absmax[lo:hi], np.float32(1e-38))
        scaled = xp.clip(blocks[lo:hi] * inv[:, None], -1, 1)
        packed[lo * half:hi * half] = pack_nibbles(nf4_codes(scaled))
    return packed, absmax


def decode_nf4_bytes(packed, out=None):
    """(..., m) bytes -> (..., 2m) float32 levels code[q], without the absmax scaling; written into
    ``out`` (a C-contiguous float32 array of that shape) when given. ``mode="clip"``: a byte is always
    a valid index, and NumPy's default bounds-checked gather is ~25% slower."""
    xp = backend.xp
    pairs = None if out is None else out.reshape(packed.shape[:-1] + (-1,)).view(np.uint64)
    clip = {"mode": "clip"} if xp is np else {}  # CuPy's take has no mode (and no bounds check)
    pairs = xp.take(xp.asarray(NF4_BYTE_TABLE), packed.astype(np.intp, copy=False), out=pairs, **clip)
    return pairs.view(np.float32)


def nf4_dequantize(packed, absmax, shape, block_size=64):
    """The float32 tensor of ``shape`` that ``packed`` and ``absmax`` encode: code[q] · absmax."""
    shape = tuple(int(n) for n in shape)
    check_block_size(block_size, shape, "tensor", even=True)
    n = math.prod(shape)
    packed = check_stored("packed NF4 codes", backend.xp.asarray(packed), n // 2, np.uint8)
    absmax = check_stored("absmax", backend.xp.asarray(absmax), n // block_size, np.float32)
    values = decode_nf4_bytes(packed).reshape(-1, block_size)
    values *= absmax[:, None]
    return values.reshape(shape)
