"""The ops Gemma 3 adds to the Llama family: geglu, softcap, and RMSNorm with weight (1 + w).

Oracles: central differences (``lora_np.gradcheck``, float64); the plain reference composed of
gradchecked primitives (``ops.reference``); transformers' Gemma 3 code run in float64
(``modeling_gemma3``: ``Gemma3MLP`` with ``gelu_pytorch_tanh``, ``Gemma3RMSNorm``, and
``Gemma3ForCausalLM``'s ``final_logit_softcapping``), with torch's autograd for the gradients.
"""

import numpy as np
import pytest
import torch
from helpers import assert_close, leaf, torch_leaf
from test_reference import assert_same_as_reference

from lora_np import Tensor, gradcheck, ops, to_numpy

gemma3 = pytest.importorskip("transformers.models.gemma3.modeling_gemma3")
Gemma3TextConfig = pytest.importorskip("transformers").Gemma3TextConfig


def _config(**kw):
    return Gemma3TextConfig(vocab_size=40, hidden_size=8, intermediate_size=12, num_hidden_layers=1,
                            num_attention_heads=2, num_key_value_heads=1, head_dim=4, max_position_embeddings=32,
                            hidden_activation="gelu_pytorch_tanh", **kw)


# ---- geglu ------------------------------------------------------------------------------------

def test_geglu_gradcheck_and_reference(rng):
    a, b = leaf(rng, 2, 3, 10), leaf(rng, 2, 3, 10)
    a.data *= 4  # both tails of tanh u
    gradcheck(ops.geglu, [a, b])
    assert_same_as_reference("geglu", [a, b], rng)


def test_geglu_mlp_equals_gemma3_mlp(rng):
    """down(geglu(gate x, up x)) against transformers' Gemma3MLP (gelu_pytorch_tanh) in float64: the
    output and the gradients of x and of the three projections."""
    mlp = gemma3.Gemma3MLP(_config()).double()
    x = leaf(rng, 2, 5, 8)
    w = {n: Tensor(getattr(mlp, n).weight.detach().numpy().copy(), requires_grad=True)
         for n in ("gate_proj", "up_proj", "down_proj")}
    y = ops.geglu(x @ w["gate_proj"].T, x @ w["up_proj"].T) @ w["down_proj"].T
    tx = torch_leaf(x)
    ty = mlp(tx)
    assert_close(y, ty)
    g = rng.standard_normal(y.shape)
    (y * Tensor(g)).sum().backward()
    (ty * torch.from_numpy(g)).sum().backward()
    assert_close(x.grad, tx.grad)
    for name, t in w.items():
        assert_close(t.grad, getattr(mlp, name).weight.grad)


def test_geglu_is_not_swiglu_and_rejects_mismatched_shapes(rng):
    a, b = leaf(rng, 6), leaf(rng, 6)
    assert not np.allclose(to_numpy(ops.geglu(a, b).data), to_numpy(ops.swiglu(a, b).data))
    with pytest.raises(ValueError, match="geglu: gate and up must have one shape"):
        ops.geglu(a, leaf(rng, 5))


# ---- softcap ----------------------------------------------------------------------------------

def test_softcap_gradcheck_and_reference(rng):
    x = leaf(rng, 3, 7)
    x.data *= 40  # well into the saturated part for cap 30
    gradcheck(lambda t: ops.softcap(t, 30.0), [x])
    assert_same_as_reference("softcap", [x], rng, cap=30.0)


def test_softcap_equals_gemma3_final_logit_softcapping(rng):
    """Gemma3ForCausalLM run twice in float64, without and with ``final_logit_softcapping``: our softcap
    of the uncapped logits equals its capped logits, and the gradient through them equals torch's."""
    torch.manual_seed(0)
    model = gemma3.Gemma3ForCausalLM(_config(final_logit_softcapping=None)).double().eval()
    ids = torch.tensor([[1, 5, 9, 3, 7]])
    with torch.no_grad():
        model.lm_head.weight.mul_(400.0)  # logits of a few hundred: the cap bites
        raw = model(ids).logits
        model.config.final_logit_softcapping = 30.0
        capped = model(ids).logits
    assert raw.abs().max() > 60.0
    z = Tensor(raw.numpy().copy(), requires_grad=True)
    y = ops.softcap(z, 30.0)
    assert_close(y, capped)
    tz = torch_leaf(z)
    ty = torch.tanh(tz / 30.0) * 30.0  # the three lines of Gemma3ForCausalLM.forward, on the same logits
    g = rng.standard_normal(y.shape)
    (y * Tensor(g)).sum().backward()
    (ty * torch.from_numpy(g)).sum().backward()
    assert_close(z.grad, tz.grad)


@pytest.mark.parametrize("cap", [0.0, -1.0, None, True, "30"])
def test_softcap_rejects_a_bad_cap(rng, cap):
    with pytest.raises(ValueError, match="softcap: cap must be a positive number"):
        ops.softcap(leaf(rng, 3), cap)


# ---- RMSNorm with weight (1 + w): ops.rms_norm(x, 1 + w), no new op ---------------------------

def gemma_rms_norm(x, w, eps=1e-6):
    """Gemma's RMSNorm as the model composes it: Llama's rms_norm with the weight 1 + w (w starts at 0)."""
    return ops.rms_norm(x, 1.0 + w, eps)


def test_one_plus_w_rms_norm_gradcheck(rng):
    """d(1 + w)/dw = 1, so dL/dw is rms_norm's Σ g ⊙ x̂ unchanged: the chain rule through an add."""
    x, w = leaf(rng, 3, 5, 8), leaf(rng, 8)
    gradcheck(gemma_rms_norm, [x, w])


def test_one_plus_w_rms_norm_equals_gemma3_rmsnorm(rng):
    """Gemma3RMSNorm in float64 (its own ``_norm`` and its ``(1 + weight)`` line; its forward upcasts
    to float32, so the float32 forward is compared at float32 precision too)."""
    norm = gemma3.Gemma3RMSNorm(16, eps=1e-6).double()
    with torch.no_grad():
        norm.weight.copy_(torch.from_numpy(rng.standard_normal(16) * 0.3))
    x, w = leaf(rng, 2, 9, 16), Tensor(norm.weight.detach().numpy().copy(), requires_grad=True)
    tx = torch_leaf(x)
    ty = norm._norm(tx) * (1.0 + norm.weight)
    y = gemma_rms_norm(x, w)
    assert_close(y, ty)
    g = rng.standard_normal(y.shape)
    (y * Tensor(g)).sum().backward()
    (ty * torch.from_numpy(g)).sum().backward()
    assert_close(x.grad, tx.grad)
    assert_close(w.grad, norm.weight.grad)
    y32 = gemma_rms_norm(Tensor(x.numpy().astype(np.float32)), Tensor(w.numpy().astype(np.float32)))
    assert_close(y32, norm.float()(tx.detach().float()), rtol=1e-5, atol=1e-6)
