"""``Bf16Weight``: a frozen (in, out) weight kept in bfloat16, the dtype most checkpoints ship in.

A bfloat16 value is the top half of a float32 (sign, the same 8 exponent bits, 7 of the 23
mantissa bits), so it is kept here as its raw 16-bit word (uint16: NumPy has no bfloat16, and no
package is needed) and widened exactly, with no rounding, by a shift:

    float32 bits = (uint32) word << 16                    (``widen_bf16``)

and a float32 weight is narrowed as PyTorch's ``.to(torch.bfloat16)`` narrows it, rounding to the
nearest word, ties to even (``bf16_words``; NaN stays a quiet NaN).

The words are stored as Wᵀ (out, in), which is how nn.Linear checkpoints store them: a bf16
safetensors file is taken as it is, word for word. ``Bf16Weight`` is a ``QuantWeight`` with
block size 1 and no statistics, so it goes through the same band-by-band matmul
(``linear_op.quant_linear``): each band of Wᵀ is widened to float32 just before its GEMM and dropped
after it, so the float32 matrix never exists whole. Half the bytes of float32, and exact: the
layer computes what the float32 layer holding the same bf16 values computes.
"""

import numpy as np

from .. import backend
from .blocks import check_stored
from .linear_op import WIDE_BAND
from .weight import QuantWeight, into


def widen_bf16(words):
    """bfloat16 words (uint16, any shape) -> the float32 values they stand for, exactly."""
    return backend.xp.left_shift(words, 16, dtype=np.uint32).view(np.float32)


def bf16_words(w):
    """The bfloat16 words of a float array: round to nearest, ties to even, as torch's ``.to(bfloat16)``."""
    xp = backend.xp
    bits = xp.asarray(w, dtype=np.float32).view(np.uint32)
    lsb = (bits >> 16) & 1                                   # ties go to the even word
    words = ((bits + (0x7FFF + lsb)) >> 16).astype(np.uint16)
    return xp.where(xp.isnan(w), np.uint16(0x7FC0), words)


class Bf16Weight(QuantWeight):
    """W (in, out) held as the bfloat16 words of Wᵀ (out, in); ``band(...)`` widens a piece of Wᵀ."""

    band_floats = WIDE_BAND  # widening is one shift: long bands, long GEMMs (linear_op.py)

    def __init__(self, words, shape, dtype=np.float32):
        """``words``: uint16 (out·in,) or (out, in), the bf16 bit patterns of Wᵀ."""
        n_in, n_out = (int(n) for n in shape)
        self.scheme, self.block_size, self.shape, self.dtype = "bf16", 1, (n_in, n_out), np.dtype(dtype)
        self.codes = check_stored("bfloat16 words", backend.xp.asarray(words), n_in * n_out,
                                  np.uint16).reshape(n_out, n_in)
        self.absmax, self.stats = None, None

    @classmethod
    def from_float(cls, w, scheme="bf16", block_size=1, double_quant=False, dtype=None):
        """Round a float (in, out) weight to bfloat16 (the other arguments are QuantWeight's, unused)."""
        w = backend.xp.asarray(w)
        if w.ndim != 2 or w.dtype.kind != "f":
            raise ValueError(f"Bf16Weight.from_float needs a 2-D float (in, out) weight; got {w.dtype} {w.shape}")
        return cls(bf16_words(w.T), w.shape, w.dtype if dtype is None else dtype)

    def band(self, r0, r1, c0=0, c1=None, out=None):
        """Rows r0..r1-1, columns c0..c1-1 of Wᵀ, widened to float32 (then the compute dtype; into
        ``out`` when given)."""
        return into(widen_bf16(self.codes[r0:r1, c0:c1]).astype(self.dtype, copy=False), out)

    def rows(self, ids):
        """Rows ``ids`` (ints, any shape) of Wᵀ widened: gathered as 16-bit words first, then widened."""
        return widen_bf16(self.codes[ids]).astype(self.dtype, copy=False)

    @property
    def data(self):
        """W widened (read), or rounded to bfloat16 from a new W (write: a merge into a bf16 base)."""
        return self.dequantize()

    @data.setter
    def data(self, w):
        self.codes = Bf16Weight.from_float(w, dtype=self.dtype).codes

    @property
    def nbytes(self):
        return int(self.codes.nbytes)

    def __repr__(self):
        return f"Bf16Weight(shape={self.shape}, 16 bits/weight)"
