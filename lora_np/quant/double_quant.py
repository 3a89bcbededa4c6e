"""Double quantization (QLoRA §3): the per-block absmax values quantized too, as bitsandbytes'
``quantize_4bit(..., compress_statistics=True)`` does.

One float32 absmax per 64 weights costs 32/64 = 0.5 bits per weight, an eighth of NF4's 4 bits.
The absmaxes of a layer are all positive and similar in size, so they quantize well themselves:

    c        = mean(m)                       (float32 offset: centring uses all 8 bits' range)
    m̃        = m - c
    m̃_b      ≈ dyn[k] · s_j                  8-bit codes k, blocks of 256 absmaxes, float32 s_j each
    m        ≈ dyn[k] · s_j + c

with ``dyn`` the dynamic 8-bit map (``codebooks.DYNAMIC_CODE``). Per weight: 8/64 bits for the code
plus 32/(64·256) for s_j = 0.127 bits instead of 0.5, about 3 GB saved on a 65B model.

The 8-bit step follows bitsandbytes' CPU kernel (``quantize_cpu_impl``, csrc/cpu_ops.cpp): x = m̃_b·(1/s_j)
in float32, then a lookup table instead of a search. [-1, 1] is cut into 65,536 cells; cell i,
whose left edge is v_i = -1 + 2i/65535, holds the number of level midpoints below v_i; x goes to
cell ⌊((x + 1)·½)·65535 + ½⌋. So "nearest" is decided at a resolution of 2/65535 ≈ 3·10⁻⁵: a
value that close to a midpoint may take the farther level (about 0.15% of the codes of Gaussian
data), and reproducing bitsandbytes' bytes means reproducing the table. A block of 256 zeros gets
scale 0 and codes 0. The last block may be shorter.
"""

import numpy as np

from .. import backend
from .blocks import check_stored
from .codebooks import DYNAMIC_CODE

STATS_BLOCK = 256
LUT_CELLS = 1 << 16


def _lookup_table():
    """The 65,536-cell table: cell i -> the number of midpoints (of ``DYNAMIC_CODE``) below v_i."""
    f32 = np.float32
    midpoints = (f32(0.5) * (DYNAMIC_CODE[:-1] + DYNAMIC_CODE[1:])).astype(f32)
    cells = np.arange(LUT_CELLS, dtype=f32)
    left_edges = f32(-1) + (f32(2) * cells) / f32(LUT_CELLS - 1)
    return np.searchsorted(midpoints, left_edges, side="left").astype(np.uint8)


DYNAMIC_LUT = _lookup_table()


def dynamic_codes(x):
    """8-bit codes for float32 values x ∈ [-1, 1], through bitsandbytes' lookup table."""
    xp = backend.xp
    x = xp.clip(x, -1, 1)
    cell = ((x + np.float32(1)) * np.float32(0.5)) * np.float32(LUT_CELLS - 1) + np.float32(0.5)
    return xp.asarray(DYNAMIC_LUT)[cell.astype(np.int64)]


def _block_ids(n, block_size):
    return backend.xp.arange(n) // block_size


def double_quantize(absmax, block_size=STATS_BLOCK, offset=None):
    """(codes uint8 (n,), scales float32 (⌈n/256⌉,), offset float32) for a float32 absmax vector.

    The offset is the mean, correctly rounded to float32. PyTorch's float32 ``mean`` (which
    bitsandbytes calls) sums in an order of its own and can land one ulp away; pass ``offset`` to
    reproduce a given one (the byte-parity tests pass bitsandbytes' to compare the rest exactly).
    """
    xp = backend.xp
    absmax = xp.asarray(absmax, dtype=np.float32).reshape(-1)
    n = absmax.size
    if offset is None:
        offset = float(absmax.astype(np.float64).sum()) / n
    offset = np.float32(offset)
    centred = absmax - offset
    padded = xp.concatenate([xp.abs(centred), xp.zeros((-n) % block_size, np.float32)])
    scales = padded.reshape(-1, block_size).max(axis=1).astype(np.float32)
    inverse = np.float32(1) / xp.where(scales > 0, scales, np.float32(1))
    codes = dynamic_codes((centred * inverse[_block_ids(n, block_size)]).astype(np.float32))
    codes[(scales == 0)[_block_ids(n, block_size)]] = 0
    return codes, scales, offset


def double_dequantize(codes, scales, offset, block_size=STATS_BLOCK, ids=None):
    """m = dyn[k] · s_j + c in float32. ``ids``: the index of each code's absmax in the whole
    vector (default 0, 1, 2, ...), which picks its scale s_j, j = id // 256."""
    xp = backend.xp
    ids = xp.arange(codes.size).reshape(codes.shape) if ids is None else ids
    values = xp.asarray(DYNAMIC_CODE)[codes.astype(np.intp, copy=False)]
    values *= scales[ids // block_size]
    values += np.float32(offset)
    return values


def check_double_quantized(codes, scales, n_blocks, block_size=STATS_BLOCK):
    """Validate stored double-quantization arrays for ``n_blocks`` absmaxes."""
    codes = check_stored("double-quantized absmax codes", codes, n_blocks, np.uint8)
    scales = check_stored("double-quantization scales", scales, -(-n_blocks // block_size), np.float32)
    return codes, scales
