"""``GGUFWeight``: a frozen (in, out) weight kept in the blocks of a GGUF file (llama.cpp's formats).

A GGUF matrix is stored as Wᵀ (out, in), row by row; each row is in/bs blocks of bs values
(bs = 32 for Q4_0/Q4_1/Q5_0/Q5_1/Q8_0, 256 for the K-quants, 1 for F32/F16/BF16), each block
``type_size`` bytes (e.g. Q4_1: 32 values in 20 bytes: a float16 scale d, a float16 minimum m and
32 4-bit codes q, w = d·q + m). So, as for NF4 (``weight.py``), any band of rows of Wᵀ and any
block-aligned band of its columns decodes on its own, and the tiled matmul of ``linear_op.py``
runs unchanged on these bytes: ``band(r0, r1, c0, c1)`` hands it one dequantized tile. Q4_0, Q4_1,
Q5_0, Q8_0 and Q6_K tiles are decoded by ``gguf_decode.py`` (the same bits as llama.cpp's NumPy codecs,
in place into the caller's tile, ~3-4x faster); the other types by llama.cpp's codecs themselves
(``gguf.quants.Q4_K.dequantize_blocks`` ..., what ``gguf.quants.dequantize`` calls 16 rows at a
time), given a whole tile's blocks in one call.

A ``GGUFWeight`` is a ``QuantWeight`` (scheme ``"gguf:q4_1"`` ...), so ``QuantLinear``, LoRA
(``quant_lora_linear``), ``dequantize_model`` and ``count_parameters`` treat it as the NF4 base.
Merging into it (``data = W'``) requantizes with ``gguf.quants.quantize`` where the gguf package
can (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0); the K-quants it can only decode, so a merge
into one asks for ``dequantize_model`` first.
"""

import numpy as np

from .. import backend
from .gguf_decode import decode_blocks
from .weight import QuantWeight, into

SUPPORTED_TYPES = ("F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K")
REQUANTIZABLE = ("F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0")


def require_gguf():
    """The ``gguf`` package (llama.cpp's reader/writer), or one ImportError saying how to get it."""
    try:
        import gguf
    except ImportError as e:
        raise ImportError("GGUF files need the gguf package (llama.cpp's reader and writer): pip install gguf") from e
    return gguf


def ggml_type(name, where="GGUF tensor"):
    """The gguf.GGMLQuantizationType called ``name`` (e.g. "Q4_1"), refusing types lora_np does not read."""
    gguf = require_gguf()
    if name not in SUPPORTED_TYPES:
        raise ValueError(f"{where}: GGML type {name} is not supported; lora_np reads {', '.join(SUPPORTED_TYPES)}")
    return gguf.GGMLQuantizationType[name]


class GGUFWeight(QuantWeight):
    """Blocks of Wᵀ (out, row_bytes) uint8 as the GGUF file holds them; W (in, out) on demand."""

    def __init__(self, type_name, blocks, shape, dtype=np.float32):
        gguf = require_gguf()
        self.qtype = ggml_type(type_name)
        self.type_name, self.scheme = type_name, "gguf:" + type_name.lower()
        n_in, n_out = (int(n) for n in shape)
        self.shape, self.dtype, self.stats, self.absmax = (n_in, n_out), np.dtype(dtype), None, None
        self.block_size, self.type_size = gguf.GGML_QUANT_SIZES[self.qtype]
        blocks = np.ascontiguousarray(blocks).view(np.uint8)
        row_bytes = n_in // self.block_size * self.type_size
        if n_in % self.block_size or blocks.shape != (n_out, row_bytes):
            raise ValueError(f"corrupt GGUF weight: {type_name} blocks of shape {blocks.shape} do not hold a "
                             f"({n_out}, {n_in}) matrix (expected ({n_out}, {row_bytes}) bytes)")
        self.codes = blocks
        self._blocks = hasattr(gguf.quants, type_name)  # a block type (F32, F16 have no codec class)
        self._dequantize = gguf.quants.dequantize

    @classmethod
    def from_float(cls, w, type_name="Q8_0", dtype=None):
        """Quantize a float (in, out) weight as llama.cpp would (``gguf.quants.quantize`` of Wᵀ)."""
        w = backend.to_numpy(w)
        if type_name not in REQUANTIZABLE:
            raise ValueError(f"the gguf package cannot quantize to {type_name} (it only decodes it); "
                             f"accepted: {', '.join(REQUANTIZABLE)}. Call lora_np.dequantize_model(model) first "
                             f"to merge into float weights")
        qtype = ggml_type(type_name)
        blocks = require_gguf().quants.quantize(np.ascontiguousarray(w.T, dtype=np.float32), qtype)
        return cls(type_name, blocks, w.shape, w.dtype if dtype is None else dtype)

    def band(self, r0, r1, c0=0, c1=None, out=None):
        """Rows r0..r1-1, columns c0..c1-1 (multiples of the block size) of Wᵀ, dequantized (into ``out``,
        an (r1-r0, c1-c0) array of the compute dtype, when given)."""
        c1 = self.shape[0] if c1 is None else c1
        b0, b1 = (c // self.block_size * self.type_size for c in (c0, c1))  # block-aligned byte columns
        return self._decode(self.codes[r0:r1, b0:b1], r1 - r0, c1 - c0, out)

    def rows(self, ids):
        """Rows ``ids`` (ints, any shape) of Wᵀ: their blocks gathered first, then decoded, shape ids.shape + (in,)."""
        ids = backend.to_numpy(ids)
        return self._decode(self.codes[ids.reshape(-1)], ids.size, self.shape[0]).reshape(*ids.shape, -1)

    def _decode(self, tile, n_rows, n_cols, out=None):
        """A (n_rows, bytes) tile of whole blocks -> its (n_rows, n_cols) values in the compute dtype
        (written into ``out`` if given)."""
        in_place = (out is not None and self._blocks and isinstance(out, np.ndarray) and out.dtype == np.float32
                    and out.flags.c_contiguous)
        if not self._blocks:  # F32 / F16 / BF16: a view, then a cast
            values = self._dequantize(tile, self.qtype)
        else:  # all the tile's blocks at once: gguf.quants.dequantize's per-16-row loop costs ~9x more here
            values = decode_blocks(self.type_name, np.ascontiguousarray(tile).reshape(-1, self.type_size),
                                   out if in_place else None)
        if in_place:
            return out
        return into(backend.xp.asarray(values.reshape(n_rows, n_cols).astype(self.dtype, copy=False)), out)

    @property
    def data(self):
        return self.dequantize()

    @data.setter
    def data(self, w):
        self.codes = GGUFWeight.from_float(w, self.type_name, self.dtype).codes

    @property
    def double_quant(self):
        return False

    @property
    def nbytes(self):
        return int(self.codes.nbytes)

    def __repr__(self):
        return f"GGUFWeight({self.type_name}, shape={self.shape}, {self.bits_per_weight():.3f} bits/weight)"
