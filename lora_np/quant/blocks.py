"""Blockwise absmax scaling, shared by NF4, int8 and double quantization.

A tensor is flattened row-major and cut into blocks of ``block_size`` consecutive values; block b
is divided by its absmax m_b = max|w| so that it lies in [-1, 1], each value is replaced by the
index of a level of a codebook, and mₐ is kept (float32) to undo the scaling:

    w ≈ code[q] · m_b

One outlier then spoils only its own block (64 values), not the whole tensor.
"""

import math

import numpy as np

from .. import backend

CHUNK = 1 << 15  # values quantized per pass: bounds the temporaries (int64 indices) of a large tensor


def check_block_size(block_size, shape, what="tensor", even=False):
    """``block_size`` must be a positive integer dividing the number of values (even for 4-bit packing)."""
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size <= 0:
        raise ValueError(f"block_size must be a positive integer; got {block_size!r}")
    if even and block_size % 2:
        raise ValueError(f"block_size must be even (two 4-bit codes share a byte); got {block_size}")
    size = math.prod(shape)
    if size == 0 or size % block_size:
        raise ValueError(f"block_size={block_size} does not divide the {size} values of the {what} of shape "
                         f"{tuple(shape)}; choose a block size that divides it (64 is bitsandbytes' default)")
    return int(block_size)


def float_blocks(w, block_size, what="tensor", even=False):
    """``w`` as a float32 array of the backend, shaped (n_blocks, block_size)."""
    w = backend.xp.asarray(w)
    if w.dtype.kind != "f":
        raise TypeError(f"can only quantize floating-point {what}s; got dtype {w.dtype}")
    check_block_size(block_size, w.shape, what, even)
    return w.astype(np.float32, copy=False).reshape(-1, block_size)


def block_absmax(blocks):
    """m_b = max |w| over each block (float32)."""
    return backend.xp.abs(blocks).max(axis=1)


def chunks(n_blocks, block_size):
    """[lo, hi) ranges of blocks, about CHUNK values each."""
    step = max(1, CHUNK // block_size)
    return [(lo, min(lo + step, n_blocks)) for lo in range(0, n_blocks, step)]


def check_stored(name, array, length, dtype):
    """A stored array (codes or statistics) must be 1-D-able with exactly ``length`` entries of ``dtype``."""
    if getattr(array, "dtype", None) != np.dtype(dtype):
        raise ValueError(f"corrupt quantized data: {name} must have dtype {np.dtype(dtype)}; "
                         f"got {getattr(array, 'dtype', type(array).__name__)}")
    if array.size != length:
        raise ValueError(f"corrupt quantized data: {name} holds {array.size} entries; the shape and block "
                         f"size need {length}")
    return array.reshape(-1)
