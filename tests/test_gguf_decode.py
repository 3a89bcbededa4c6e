"""The fast GGUF block decoders (lora_np/quant/gguf_decode.py) against llama.cpp's NumPy codecs.

Oracle: ``gguf.quants`` (the gguf package, llama.cpp's reader): ``<TYPE>.dequantize_blocks`` on random
blocks and ``gguf.quants.dequantize`` on the real tensors of the shipped GGUF files (SmolLM2's Q4_1 and
Q8_0; Gemma 3's Q6_K: tests/test_gguf.py). Equal bit for bit, NaN and infinity included, not to a tolerance.
"""

import numpy as np
import pytest

from lora_np.quant.gguf_decode import FAST, decode_blocks, reference_decode
from lora_np.quant.gguf_weight import GGUFWeight

gguf = pytest.importorskip("gguf")

from real_models import smollm2_gguf  # noqa: E402


def random_blocks(type_name, n, rng):
    """n blocks of random bytes whose float16 scales are random finite values, zeros, subnormals,
    infinities and NaNs (every bit pattern the file format allows). Q6_K's d is its last two bytes, after
    its 16 int8 sub-block scales (random bytes: every int8)."""
    _, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[type_name]]
    blocks = rng.integers(0, 256, (n, type_size), dtype=np.uint8)
    n_scales = 2 if type_name == "Q4_1" else 1
    scales = (rng.standard_normal((n, n_scales)) * 10.0 ** rng.integers(-7, 4, (n, n_scales))).astype(np.float16)
    scales[:8] = np.array([0, -0.0, 6e-8, -6e-8, np.inf, -np.inf, np.nan, 65504], np.float16)[:, None]
    first = type_size - 2 if type_name == "Q6_K" else 0
    blocks[:, first:first + 2 * n_scales] = scales.view(np.uint8)
    return blocks


def same_bits(a, b):
    return a.shape == b.shape and np.array_equal(np.asarray(a).view(np.uint32), np.asarray(b).view(np.uint32))


@pytest.mark.parametrize("type_name", sorted(FAST))
@np.errstate(invalid="ignore", over="ignore")  # inf · 0 and NaN scales: NaN, as in gguf's codec
def test_random_blocks_decode_as_gguf_does(type_name):
    rng = np.random.default_rng(0)
    blocks = random_blocks(type_name, 3000, rng)
    ref = getattr(gguf.quants, type_name).dequantize_blocks(blocks)
    assert same_bits(decode_blocks(type_name, blocks), ref)
    assert same_bits(reference_decode(type_name, blocks), ref)
    size = ref.shape[1]  # 32 values a block; Q6_K's 256
    out = np.full((3000 * size,), np.nan, np.float32)  # into the caller's array, as the kept tile is written
    assert decode_blocks(type_name, blocks, out).base is out and same_bits(out.reshape(-1, size), ref)
    odd = blocks[1::3]  # strided rows (a column band of a tile) are copied first
    assert same_bits(decode_blocks(type_name, odd), getattr(gguf.quants, type_name).dequantize_blocks(odd))


def test_types_without_a_fast_decoder_use_the_reference():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((8, 64)).astype(np.float32)
    blocks = gguf.quants.quantize(w, gguf.GGMLQuantizationType.Q5_1).reshape(-1, 24)
    out = np.empty((16, 32), np.float32)
    decode_blocks("Q5_1", blocks, out)
    assert same_bits(out, gguf.quants.Q5_1.dequantize_blocks(blocks))


def real_tensors(path, rows=512):
    """(type name, (rows, row bytes) uint8) of every tensor of a fast-decoded type: the first ``rows``
    rows, the last ``rows`` rows."""
    for t in gguf.GGUFReader(path).tensors:
        if t.tensor_type.name in FAST:
            data = np.asarray(t.data)
            yield t.name, t.tensor_type, np.concatenate([data[:rows], data[-rows:]]) if len(data) > 2 * rows else data


def test_real_tensors_decode_as_gguf_does():
    """Every Q4_1 / Q8_0 tensor of SmolLM2's file (up to 1,024 rows each), through ``GGUFWeight.band``
    (the matmul's path) and into a given tile. (Gemma 3's Q8_0 and Q5_0 tensors: tests/test_gguf.py's
    test_k_quant_blocks_decode_tile_by_tile, through the same ``band``.)"""
    seen = set()
    for name, qtype, data in real_tensors(str(smollm2_gguf())):
        ref = gguf.quants.dequantize(data, qtype)  # (rows, in)
        w = GGUFWeight(qtype.name, data, ref.shape[::-1])
        assert same_bits(w.band(0, ref.shape[0]), ref), name
        tile = np.empty((3, 64), np.float32)
        assert w.band(2, 5, 32, 96, out=tile) is tile and same_bits(tile, ref[2:5, 32:96]), name
        seen.add(qtype.name)
    assert seen  # the file held some
