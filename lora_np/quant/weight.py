"""``QuantWeight``: a frozen (in, out) weight kept only as 4- or 8-bit codes plus block statistics.

Storage follows bitsandbytes' ``Linear4bit`` for a GPT-2 Conv1D layer: the weight is quantized in
(out, in) order, i.e. Wᵀ flattened row-major (transformers transposes Conv1D weights before
quantizing), so block b of 64 values is 64 consecutive *inputs* of one output unit. With
``in_features`` a multiple of the block size every row of Wᵀ is a whole number of blocks, so any
band of rows [r0, r1) or of block-aligned columns [c0, c1) of Wᵀ decodes on its own: that is what
lets the matmul dequantize one cache-sized band at a time (``linear_op.py``) instead of ever
holding the float32 matrix.

Bytes per weight: NF4 ½ + statistics (4/64 plain, or (1 + 4/256)/64 double-quantized); int8 1 +
the same statistics.
"""

import numpy as np

from .. import backend
from .blocks import check_block_size, check_stored
from .double_quant import STATS_BLOCK, check_double_quantized, double_dequantize, double_quantize
from .int8 import int8_quantize, scale_int8
from .linear_op import BAND
from .nf4 import decode_nf4_bytes, nf4_quantize

SCHEMES = ("nf4", "int8", "bf16")  # bf16: bfloat16 words, no blocks (bf16.py's Bf16Weight)


def check_scheme(scheme):
    """``"nf4"``, ``"int8"`` or ``"bf16"``; anything else is a ValueError naming them."""
    if not isinstance(scheme, str) or scheme.lower() not in SCHEMES:
        raise ValueError(f"unknown quantization {scheme!r}; accepted: 'nf4' (4-bit NormalFloat, QLoRA), 'int8', "
                         f"or 'bf16' (the frozen base kept in bfloat16)")
    return scheme.lower()


def into(values, out=None):
    """``values``, or ``out`` holding a copy of them when given (``band``'s ``out=``)."""
    if out is None:
        return values
    out[...] = values
    return out


class QuantWeight:
    """Codes and statistics of W (in, out); ``dequantize()`` rebuilds W, ``band(...)`` a piece of Wᵀ.

    Not a Parameter: it has no gradient and never trains (QLoRA's base is frozen); a model's
    ``state_dict`` leaves it out, so ``save_gpt2`` refuses a quantized model (dequantize first).
    """

    band_floats = BAND  # values decoded per band of the tiled matmul (linear_op.py)

    def __init__(self, scheme, codes, absmax, shape, block_size=64, dtype=np.float32, stats=None):
        """``codes``: NF4 bytes (out·in/2,) or int8 codes (out·in,) of Wᵀ; ``absmax``: float32 per
        block, or None with ``stats = (codes8, scales, offset)`` when double-quantized."""
        self.scheme = check_scheme(scheme)
        if self.scheme == "bf16":
            raise ValueError("QuantWeight holds NF4 or int8 codes; a bf16 weight is a Bf16Weight (quant/bf16.py)")
        n_in, n_out = (int(n) for n in shape)
        self.shape, self.block_size, self.dtype = (n_in, n_out), int(block_size), np.dtype(dtype)
        check_block_size(block_size, (n_in,), "rows of Wᵀ (in_features)", even=self.scheme == "nf4")
        n_blocks = n_in * n_out // self.block_size
        xp = backend.xp
        if self.scheme == "nf4":
            self.codes = check_stored("packed NF4 codes", xp.asarray(codes), n_in * n_out // 2,
                                      np.uint8).reshape(n_out, n_in // 2)
        else:
            self.codes = check_stored("int8 codes", xp.asarray(codes), n_in * n_out, np.int8).reshape(n_out, n_in)
        if stats is None:
            self.absmax, self.stats = check_stored("absmax", xp.asarray(absmax), n_blocks, np.float32), None
        else:
            codes8, scales = check_double_quantized(xp.asarray(stats[0]), xp.asarray(stats[1]), n_blocks)
            self.absmax, self.stats = None, (codes8, scales, np.float32(stats[2]))

    @classmethod
    def from_float(cls, w, scheme="nf4", block_size=64, double_quant=True, dtype=None):
        """Quantize a float (in, out) weight (host or device array) as bitsandbytes quantizes Wᵀ."""
        scheme = check_scheme(scheme)
        w = backend.xp.asarray(w)
        if w.ndim != 2:
            raise ValueError(f"QuantWeight.from_float needs a 2-D (in, out) weight; got shape {w.shape}")
        check_block_size(block_size, (w.shape[0],), "rows of Wᵀ (in_features)", even=scheme == "nf4")
        quantize = nf4_quantize if scheme == "nf4" else int8_quantize
        codes, absmax = quantize(backend.xp.ascontiguousarray(w.T), block_size)
        stats = double_quantize(absmax) if double_quant else None
        return cls(scheme, codes, None if double_quant else absmax, w.shape, block_size,
                   w.dtype if dtype is None else dtype, stats)

    @property
    def ndim(self):
        return 2

    @property
    def double_quant(self):
        return self.stats is not None

    def block_absmax(self, r0, r1, j0, j1):
        """The absmax of blocks j0..j1-1 of rows r0..r1-1 of Wᵀ, (r1-r0, j1-j0) float32."""
        per_row = self.shape[0] // self.block_size
        if self.stats is None:
            return self.absmax.reshape(-1, per_row)[r0:r1, j0:j1]
        codes8, scales, offset = self.stats
        ids = backend.xp.arange(r0, r1)[:, None] * per_row + backend.xp.arange(j0, j1)[None, :]
        return double_dequantize(codes8[ids], scales, offset, STATS_BLOCK, ids)

    def band(self, r0, r1, c0=0, c1=None, out=None):
        """Rows r0..r1-1, columns c0..c1-1 (multiples of the block size) of Wᵀ, dequantized (into
        ``out``, an (r1-r0, c1-c0) array of the compute dtype, when given).

        NF4: code[q]·absmax; int8: (q·absmax)·(1/127): float32 as bitsandbytes computes it, then
        cast to the compute dtype.
        """
        c1 = self.shape[0] if c1 is None else c1
        bs = self.block_size
        absmax = self.block_absmax(r0, r1, c0 // bs, c1 // bs)
        if self.scheme == "nf4":
            direct = out if out is not None and out.dtype == np.float32 and out.flags.c_contiguous else None
            values = decode_nf4_bytes(self.codes[r0:r1, c0 // 2:c1 // 2], direct).reshape(r1 - r0, -1, bs)
            values *= absmax[..., None]
            if direct is not None:
                return out
        else:
            values = scale_int8(self.codes[r0:r1, c0:c1].reshape(r1 - r0, -1, bs), absmax)
        return into(values.reshape(r1 - r0, c1 - c0).astype(self.dtype, copy=False), out)

    def dequantize(self):
        """W (in, out) in the compute dtype: the float weight this stands for."""
        return backend.xp.ascontiguousarray(self.band(0, self.shape[1]).T)

    @property
    def data(self):
        """W dequantized (read), or requantized from a new W (write: how ``merge_lora`` merges into a
        4-bit base, as PEFT does: W' = deq(Q) + ΔW, then quantized again, see ``quant/model.py``)."""
        return self.dequantize()

    @data.setter
    def data(self, w):
        new = QuantWeight.from_float(w, self.scheme, self.block_size, self.double_quant, self.dtype)
        self.codes, self.absmax, self.stats = new.codes, new.absmax, new.stats

    @property
    def nbytes(self):
        """Bytes held: codes plus statistics."""
        stats = self.absmax.nbytes if self.stats is None else self.stats[0].nbytes + self.stats[1].nbytes + 4
        return int(self.codes.nbytes + stats)

    def bits_per_weight(self):
        return 8 * self.nbytes / (self.shape[0] * self.shape[1])

    def __repr__(self):
        return (f"QuantWeight({self.scheme}, shape={self.shape}, block_size={self.block_size}, "
                f"double_quant={self.double_quant}, {self.bits_per_weight():.3f} bits/weight)")
