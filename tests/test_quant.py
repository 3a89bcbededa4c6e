"""NF4, int8 and double quantization against bitsandbytes (byte for byte, midpoint ties included),
the codebooks against bitsandbytes' tables, and the quantized linear op against central differences
(float64 gradcheck) and against the float op on bitsandbytes' dequantized weight."""

import math

import numpy as np
import pytest
import torch

from lora_np import Tensor, gradcheck, ops, to_numpy
from lora_np.quant import (DYNAMIC_CODE, NF4_CODE, QuantWeight, double_dequantize, double_quantize, int8_dequantize,
                           int8_quantize, nf4_dequantize, nf4_quantize, quant_linear, quant_lora_linear)
from lora_np.quant.codebooks import NF4_OFFSET
from lora_np.quant.nf4 import NF4_MIDPOINTS

bnb = pytest.importorskip("bitsandbytes.functional")


def _bnb_nf4(w, double_quant=False, block_size=64):
    return bnb.quantize_4bit(torch.from_numpy(np.ascontiguousarray(w)), blocksize=block_size, quant_type="nf4",
                             compress_statistics=double_quant)


def _weights(rng, shape, std=0.02):
    return (rng.standard_normal(shape) * std).astype(np.float32)


def test_nf4_codebook_from_normal_quantiles_is_bitsandbytes_table():
    assert np.array_equal(NF4_CODE, bnb.get_4bit_type("nf4", device="cpu").numpy())
    from statistics import NormalDist  # the same derivation in float64 throughout
    q = NormalDist().inv_cdf
    pos = [q(p) for p in np.linspace(NF4_OFFSET, 0.5, 9)[:-1]]
    neg = [-q(p) for p in np.linspace(NF4_OFFSET, 0.5, 8)[:-1]]
    levels = np.sort(np.array(pos + neg + [0.0]))
    np.testing.assert_allclose(levels / levels.max(), NF4_CODE, atol=2e-7)
    assert abs(NF4_OFFSET - (1 - (1 / 32 + 1 / 30) / 2)) < 1e-7


def test_dynamic_codebook_is_bitsandbytes_map():
    assert np.array_equal(DYNAMIC_CODE, bnb.create_dynamic_map().numpy())


@pytest.mark.parametrize("shape", [(128, 64), (192, 256), (3, 4, 64), (64 * 33,)])
def test_nf4_bytes_equal_bitsandbytes(rng, shape):
    w = _weights(rng, shape)
    packed, absmax = nf4_quantize(w)
    ref, state = _bnb_nf4(w)
    assert np.array_equal(to_numpy(packed), ref.numpy().reshape(-1))
    assert np.array_equal(to_numpy(absmax), state.absmax.numpy())
    assert np.array_equal(to_numpy(nf4_dequantize(packed, absmax, shape)),
                          bnb.dequantize_4bit(ref, state).numpy().reshape(shape))


def test_nf4_midpoint_ties_and_zero_block_match_bitsandbytes():
    """Values exactly on the float32 midpoints between levels (and one ulp either side) in blocks whose
    absmax is 1, so the scaled value is the value itself; plus an all-zero block."""
    f32 = np.float32
    ties = np.concatenate([NF4_MIDPOINTS, np.nextafter(NF4_MIDPOINTS, f32(2)), np.nextafter(NF4_MIDPOINTS, f32(-2)),
                           NF4_CODE, [0.0, -0.0]]).astype(f32)
    blocks = np.zeros((4, 64), dtype=f32)
    blocks[:3, 0] = 1.0
    blocks[:3, 1:1 + 63].flat[:ties.size] = ties
    packed, absmax = nf4_quantize(blocks)
    ref, state = _bnb_nf4(blocks)
    assert np.array_equal(to_numpy(packed), ref.numpy().reshape(-1))
    assert np.array_equal(to_numpy(absmax), state.absmax.numpy())


@pytest.mark.parametrize("shape", [(128, 64), (768, 256), (64 * 300,)])
def test_double_quantization_matches_compress_statistics(rng, shape):
    w = _weights(rng, shape)
    packed, absmax = nf4_quantize(w)
    ref, state = _bnb_nf4(w, double_quant=True)
    bnb_offset = np.float32(state.offset.item())
    codes, scales, offset = double_quantize(absmax)
    exact_mean = math.fsum(to_numpy(absmax).astype(np.float64)) / absmax.size
    assert offset == np.float32(exact_mean)                        # correctly rounded mean
    assert abs(offset - bnb_offset) <= np.spacing(bnb_offset)      # torch's float32 mean: within one ulp
    codes, scales, offset = double_quantize(absmax, offset=bnb_offset)
    assert np.array_equal(to_numpy(codes), state.absmax.numpy())
    assert np.array_equal(to_numpy(scales), state.state2.absmax.numpy())
    restored = double_dequantize(codes, scales, offset)
    assert np.array_equal(to_numpy(nf4_dequantize(packed, restored, shape)),
                          bnb.dequantize_4bit(ref, state).numpy().reshape(shape))


def test_dynamic_8bit_codes_match_bitsandbytes_lookup_near_midpoints():
    """bitsandbytes' CPU kernel decides through a 65,536-cell table: a value a hair past a midpoint can
    take the farther level. Dense values, exact midpoints among them, must give the same bytes."""
    f32 = np.float32
    mid = (f32(0.5) * (DYNAMIC_CODE[:-1] + DYNAMIC_CODE[1:])).astype(f32)
    dense = np.linspace(-1, 1, 255 * 400, dtype=f32)
    values = np.concatenate([mid, np.nextafter(mid, f32(2)), dense, mid + f32(1e-5), mid - f32(1e-5)]).astype(f32)
    values = np.clip(values, -1, 1)
    values = np.concatenate([values, np.zeros((-values.size) % 255, f32)]).reshape(-1, 255)
    blocks = np.concatenate([np.ones((values.shape[0], 1), f32), values], axis=1).reshape(-1)  # absmax 1
    ref, state = bnb.quantize_blockwise(torch.from_numpy(blocks), blocksize=256)
    codes, scales, _ = double_quantize(blocks, offset=0.0)
    assert np.array_equal(to_numpy(scales), state.absmax.numpy())
    assert np.array_equal(to_numpy(codes), ref.numpy())


@pytest.mark.parametrize("shape", [(16, 64), (300, 768)])
def test_int8_matches_bitsandbytes_rowwise_when_one_block_per_row(rng, shape):
    w = _weights(rng, shape)
    w[0, :4] = [0.5, 1.5, 2.5, -127.0]  # absmax 127: scale (1/127)·127 is exactly 1, so these are ties
    q, absmax = int8_quantize(w, block_size=shape[1])
    assert list(to_numpy(q)[:4]) == [0, 2, 2, -127]  # round half to even
    ref_q, ref_stats, _ = bnb.int8_vectorwise_quant(torch.from_numpy(w.copy()))
    assert np.array_equal(to_numpy(q).reshape(shape), ref_q.numpy())
    assert np.array_equal(to_numpy(absmax), ref_stats.numpy())
    assert np.array_equal(to_numpy(int8_dequantize(q, absmax, shape, shape[1])),
                          bnb.int8_vectorwise_dequant(ref_q, ref_stats).numpy())


def test_blockwise_int8_error_bound(rng):
    """|w - deq(q)| ≤ absmax/254 per block (half a step of 1/127), plus float32 rounding."""
    w = _weights(rng, (64, 256))
    q, absmax = int8_quantize(w)
    err = np.abs(to_numpy(int8_dequantize(q, absmax, w.shape)) - w).reshape(-1, 64).max(axis=1)
    assert np.all(err <= to_numpy(absmax) / 254 * (1 + 1e-5))


def test_quant_weight_bands_and_bits_per_weight(rng):
    w = _weights(rng, (256, 192))
    for scheme, dq, bits in (("nf4", False, 4 + 32 / 64), ("nf4", True, 4 + 8 / 64 + (3 * 32 + 32) / (256 * 192)),
                             ("int8", False, 8 + 32 / 64)):
        qw = QuantWeight.from_float(w, scheme, double_quant=dq)
        full = to_numpy(qw.dequantize())
        if scheme == "nf4" and not dq:
            packed, absmax = nf4_quantize(w.T)  # Wᵀ's bytes, as bitsandbytes stores a Conv1D weight
            assert np.array_equal(full.T, to_numpy(nf4_dequantize(packed, absmax, w.T.shape)))
        assert np.array_equal(to_numpy(qw.band(10, 50, 64, 192)), full.T[10:50, 64:192])
        assert qw.bits_per_weight() == pytest.approx(bits)


def test_quant_linear_gradcheck_float64(rng):
    qw = QuantWeight.from_float(_weights(rng, (128, 96)), dtype=np.float64)
    x = Tensor(rng.standard_normal((2, 3, 128)), requires_grad=True)
    b = Tensor(rng.standard_normal(96), requires_grad=True)
    assert gradcheck(lambda x, b: quant_linear(x, qw, b), (x, b))


def _check_quant_linear_against_bitsandbytes(rng, shape, n_rows):
    """quant_linear's Y and dX against x W and G Wᵀ with W bitsandbytes' dequantized NF4 weight."""
    w = _weights(rng, shape)
    qw = QuantWeight.from_float(w, double_quant=False)
    ref, state = _bnb_nf4(w.T.copy())
    w_deq = bnb.dequantize_4bit(ref, state).numpy().T           # the oracle's dequantized (in, out)
    x = Tensor(rng.standard_normal((n_rows, shape[0])).astype(np.float32), requires_grad=True)
    y = quant_linear(x, qw)
    np.testing.assert_allclose(to_numpy(y), to_numpy(x) @ w_deq, rtol=1e-5, atol=1e-5)
    g = rng.standard_normal(y.shape).astype(np.float32)
    y.backward(Tensor(g))
    np.testing.assert_allclose(to_numpy(x.grad), g @ w_deq.T, rtol=1e-5, atol=1e-5)


def test_quant_linear_equals_float_linear_on_bitsandbytes_dequantized_weight(rng, monkeypatch):
    import lora_np.quant.linear_op as module
    monkeypatch.setattr(QuantWeight, "band_floats", 1000)  # many bands, both directions
    monkeypatch.setattr(module, "MIN_SIDE", 1)  # (bands are otherwise at least 256 rows or columns)
    monkeypatch.setattr(module, "DECODE", 300)  # and each decoded in several pieces
    _check_quant_linear_against_bitsandbytes(rng, (192, 128), 5)


def test_quant_linear_default_bands_cover_uneven_edges(rng, monkeypatch):
    """The rule (a band at least MIN_SIDE = 256 rows / columns, equal bands): with bands of about
    256 × 704 floats, 601 outputs are bands of 300 and 301 rows; 704 inputs (11 blocks) are bands of 320
    and 384 columns."""
    from lora_np.quant.linear_op import MIN_SIDE, _bands
    assert MIN_SIDE == 256
    monkeypatch.setattr(QuantWeight, "band_floats", 256 * 704)
    assert _bands(601, 704, 256 * 704) == [0, 300, 601] and _bands(11, 64 * 601, 256 * 704, 64) == [0, 5, 11]
    _check_quant_linear_against_bitsandbytes(rng, (704, 601), 3)


def test_quant_lora_linear_gradcheck_and_equals_float_lora_op(rng):
    qw = QuantWeight.from_float(_weights(rng, (64, 48)), dtype=np.float64)
    x = Tensor(rng.standard_normal((4, 64)), requires_grad=True)
    a = Tensor(rng.standard_normal((4, 64)), requires_grad=True)
    b = Tensor(rng.standard_normal((48, 4)), requires_grad=True)
    bias = Tensor(rng.standard_normal(48))
    assert gradcheck(lambda x, a, b: quant_lora_linear(x, qw, bias, a, b, 2.0), (x, a, b))
    w = Tensor(qw.dequantize())
    np.testing.assert_allclose(to_numpy(quant_lora_linear(x, qw, bias, a, b, 2.0)),
                               to_numpy(ops.lora_linear(x, w, bias, a, b, 2.0)), rtol=1e-12, atol=1e-12)


def test_bad_inputs(rng):
    w = _weights(rng, (96, 64))
    with pytest.raises(ValueError, match="block_size=64 does not divide"):
        nf4_quantize(w[:, :9])
    with pytest.raises(ValueError, match="does not divide the 96 values of the rows of Wᵀ"):
        QuantWeight.from_float(w)  # in_features 96: a row of Wᵀ is not a whole number of blocks
    with pytest.raises(ValueError, match="block_size must be a positive integer"):
        int8_quantize(w, block_size=0)
    with pytest.raises(ValueError, match="unknown quantization 'nf3'"):
        QuantWeight.from_float(w.T, "nf3")
    packed, absmax = nf4_quantize(w)
    with pytest.raises(ValueError, match="corrupt quantized data: packed NF4 codes holds 3071"):
        nf4_dequantize(to_numpy(packed)[:-1], absmax, w.shape)
    with pytest.raises(ValueError, match="corrupt quantized data: absmax must have dtype float32"):
        nf4_dequantize(packed, to_numpy(absmax).astype(np.float64), w.shape)
    with pytest.raises(ValueError, match="corrupt quantized data: int8 codes holds"):
        int8_dequantize(np.zeros(10, np.int8), absmax, w.shape)
    with pytest.raises(TypeError, match="floating-point"):
        nf4_quantize(np.zeros((64,), np.int32))
