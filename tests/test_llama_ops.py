"""The three new ops of the Llama family: rms_norm, rope, swiglu.

Oracles: central differences (``lora_np.gradcheck``, float64), the plain reference composed of
gradchecked primitives (``ops.reference``), and PyTorch / transformers (the RMSNorm formula, SiLU,
``apply_rotary_pos_emb`` and the rotary tables of ``LlamaRotaryEmbedding``, llama3 scaling
included).
"""

import inspect

import numpy as np
import pytest
import torch

from lora_np import Tensor, gradcheck, no_grad, ops, to_numpy
from lora_np.ops import reference
from lora_np.ops.rope import rope_inv_freq, rope_tables
from helpers import assert_close, leaf, torch_leaf
from test_reference import assert_same_as_reference

LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 64}


def _tables(head_dim=8, t=6, theta=10000.0, scaling=None, dtype=np.float64):
    return rope_tables(rope_inv_freq(head_dim, theta, scaling), 0, t, dtype)


def test_rms_norm_gradcheck_and_reference(rng):
    x, w = leaf(rng, 3, 5, 8), leaf(rng, 8)
    gradcheck(lambda a, b: ops.rms_norm(a, b, eps=1e-6), [x, w])
    assert_same_as_reference("rms_norm", [x, w], rng, eps=1e-5)


def test_rms_norm_without_a_graph_equals_torch(rng):
    """Under no_grad x̂ is made in the output (nothing keeps it): the same values as the recorded op."""
    x, w = leaf(rng, 2, 70, 16), leaf(rng, 16)
    tx, tw = torch_leaf(x), torch_leaf(w)
    with no_grad():
        y = ops.rms_norm(x, w, 1e-6)
    assert not y.requires_grad
    assert_close(y, tw * (tx * torch.rsqrt(tx.pow(2).mean(-1, keepdim=True) + 1e-6)))


def test_rms_norm_equals_torch(rng):
    x, w = leaf(rng, 2, 70, 16), leaf(rng, 16)
    tx, tw = torch_leaf(x), torch_leaf(w)
    ty = tw * (tx * torch.rsqrt(tx.pow(2).mean(-1, keepdim=True) + 1e-6))   # LlamaRMSNorm in float64
    y = ops.rms_norm(x, w, 1e-6)
    g = rng.standard_normal(y.shape)
    (y * g).sum().backward()
    (ty * torch.from_numpy(g)).sum().backward()
    assert_close(y, ty)
    assert_close(x.grad, tx.grad)
    assert_close(w.grad, tw.grad)


def test_swiglu_gradcheck_reference_and_torch(rng):
    a, b = leaf(rng, 2, 3, 10), leaf(rng, 2, 3, 10)
    a.data *= 6  # both tails of the sigmoid (e⁻ᵃ overflows nowhere here, but σ saturates)
    gradcheck(ops.swiglu, [a, b])
    assert_same_as_reference("swiglu", [a, b], rng)
    ta, tb = torch_leaf(a), torch_leaf(b)
    th = torch.nn.functional.silu(ta) * tb
    h = ops.swiglu(a, b)
    assert_close(h, th)
    a.zero_grad()
    b.zero_grad()
    h.sum().backward()
    th.sum().backward()
    assert_close(a.grad, ta.grad)
    assert_close(b.grad, tb.grad)


def test_swiglu_saturates_without_overflow(rng):
    a = leaf(rng, 4)
    a.data[:] = [-1000.0, -50.0, 50.0, 1000.0]
    h = ops.swiglu(a, leaf(rng, 4))
    assert np.isfinite(to_numpy(h.data)).all()


@pytest.mark.parametrize("layout", ["bhtd", "bthd"])
def test_rope_gradcheck_and_reference(layout, rng):
    cos, sin = _tables(8, 6)
    if layout == "bhtd":
        x = leaf(rng, 2, 3, 6, 8)
    else:
        x, cos, sin = leaf(rng, 2, 6, 3, 8), cos[:, None, :], sin[:, None, :]
    gradcheck(lambda t: ops.rope(t, cos, sin), [x])
    assert_same_as_reference("rope", [x], rng, cos=cos, sin=sin)


def test_rope_backward_is_the_inverse_rotation(rng):
    """dL/dx = R(-θ) g, so rotating dL/dx forward by R(θ) gives g back (R(θ) R(-θ) = I; float64
    tables here, since float32-rounded ones have cos² + sin² = 1 only to 1e-7)."""
    angles = np.arange(6)[:, None] * rope_inv_freq(8, 10000.0).astype(np.float64)
    cos, sin = np.cos(angles), np.sin(angles)
    x = leaf(rng, 1, 2, 6, 8)
    g = rng.standard_normal(x.shape)
    ops.rope(x, cos, sin).backward(g)
    np.testing.assert_allclose(to_numpy(ops.rope(Tensor(x.grad), cos, sin).data), g, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("scaling", [None, LLAMA3], ids=["default", "llama3"])
def test_rope_frequencies_tables_and_rotation_equal_transformers(scaling, rng):
    """inv_freq (llama3 scaling included) bit for bit; the tables to float64 rounding against
    transformers' tables formed in float64 (llama_oracle), and to float32-angle rounding against its
    own float32 tables; the rotation against apply_rotary_pos_emb."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb
    from llama_oracle import float64_transformers
    rope_parameters = {**(scaling or {"rope_type": "default"}), "rope_theta": 500000.0}
    rotary = LlamaRotaryEmbedding(LlamaConfig(hidden_size=256, num_attention_heads=2, rope_parameters=rope_parameters))
    inv_freq = rope_inv_freq(128, 500000.0, scaling)
    assert np.array_equal(inv_freq, rotary.inv_freq.numpy())
    t = 200
    positions = torch.arange(t)[None]
    with float64_transformers():
        hf_cos, hf_sin = rotary(torch.zeros(1, dtype=torch.float64), positions)
    cos, sin = rope_tables(inv_freq, 0, t, np.float64)
    np.testing.assert_allclose(np.concatenate([cos, cos], -1), hf_cos[0].numpy(), rtol=0, atol=1e-15)
    np.testing.assert_allclose(np.concatenate([sin, sin], -1), hf_sin[0].numpy(), rtol=0, atol=1e-15)
    hf32_cos, _ = rotary(torch.zeros(1, dtype=torch.float32), positions)
    cos32, _ = rope_tables(inv_freq, 0, t, np.float32)
    np.testing.assert_allclose(np.concatenate([cos32, cos32], -1), hf32_cos[0].numpy(), rtol=0, atol=t * 2.0 ** -23)
    q = leaf(rng, 2, 3, t, 128)
    tq = torch_leaf(q)
    ty, _ = apply_rotary_pos_emb(tq, tq, hf_cos, hf_sin)
    assert_close(ops.rope(q, cos, sin), ty, rtol=1e-13, atol=1e-13)


def test_references_have_the_fused_signatures():
    for name in ("rms_norm", "rope", "swiglu"):
        assert inspect.signature(getattr(reference, name)) == inspect.signature(getattr(ops, name)), name
        assert f"ops.reference.{name}" in getattr(ops, name).__doc__, name


@pytest.mark.parametrize("call, message", [
    (lambda r: ops.rms_norm(leaf(r, 2, 8), leaf(r, 7)), "rms_norm: weight has shape"),
    (lambda r: ops.swiglu(leaf(r, 2, 8), leaf(r, 2, 7)), "swiglu: gate and up"),
    (lambda r: ops.rope(leaf(r, 2, 7), *_tables(8, 2)), "rope: x of shape"),
])
def test_bad_shapes_are_named(call, message, rng):
    with pytest.raises(ValueError, match=message):
        call(rng)


def test_threaded_paths_equal_the_references(rng):
    """Under parallel.forced_threads(2) every op is split into row blocks even at these sizes."""
    from lora_np import parallel
    cos, sin = _tables(8, 6)
    with parallel.forced_threads(2):
        assert_same_as_reference("rms_norm", [leaf(rng, 4, 5, 8), leaf(rng, 8)], rng, eps=1e-6)
        assert_same_as_reference("swiglu", [leaf(rng, 4, 5, 8), leaf(rng, 4, 5, 8)], rng)
        assert_same_as_reference("rope", [leaf(rng, 4, 6, 3, 8)], rng, cos=cos[:, None], sin=sin[:, None])
