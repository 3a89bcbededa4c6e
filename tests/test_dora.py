"""DoRA: the fused op against central differences (detached norm and exact gradient) and against its
composition from primitive ops; PEFT as the oracle for files, logits, gradients and merging."""

import json

import numpy as np
import pytest
import torch

import lora_np
from lora_np import (LoraConfig, Tensor, add_lora, disable_lora, gradcheck, load_gpt2, merge_and_unload, merge_lora,
                     save_adapter, to_numpy, unmerge_lora)
from lora_np.ops import reference
from lora_np.ops.dora_linear import dora_linear, dora_weight_norm
from helpers import leaf
from hf_oracle import max_rel_err, tiny_hf_gpt2
from peft_oracle import logit_and_grad_errors, ours_from_peft_files, peft_gpt2


def _op_inputs(rng, x_shape=(5, 6), with_bias=True):
    x, a, b = leaf(rng, *x_shape), leaf(rng, 3, 6), leaf(rng, 4, 3)
    w = Tensor(rng.standard_normal((6, 4)))
    m = leaf(rng, 4, positive=True)
    bias = Tensor(rng.standard_normal(4)) if with_bias else None
    return x, w, bias, a, b, m


# --- the op ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("x_shape", [(5, 6), (2, 3, 6)], ids=["2d", "3d"])
@pytest.mark.parametrize("dropout", [0.0, 0.4], ids=["no-dropout", "dropout"])
@pytest.mark.parametrize("trained_w", [False, True], ids=["frozen-W", "trained-W"])
def test_detached_norm_gradient_is_the_derivative_with_the_norm_held_constant(x_shape, dropout, trained_w, rng):
    """Oracle: central differences of the forward with n passed in as a constant (what detaching means)."""
    x, w, bias, a, b, m = _op_inputs(rng, x_shape)
    w.requires_grad = bias.requires_grad = trained_w
    norm = Tensor(dora_weight_norm(w.data, a.data, b.data, 0.7)[0])
    inputs = [x, a, b, m] + ([w, bias] if trained_w else [])

    def f(*_):
        lora_np.manual_seed(5)  # the same dropout mask in every evaluation
        return dora_linear(x, w, bias, a, b, m, 0.7, dropout, weight_norm=norm)

    assert gradcheck(f, inputs)


@pytest.mark.parametrize("trained_w", [False, True], ids=["frozen-W", "trained-W"])
def test_exact_gradient_matches_central_differences(trained_w, rng):
    """detach_norm=False: n moves with A, B (and W), and the gradient through it is included."""
    x, w, bias, a, b, m = _op_inputs(rng, (2, 3, 6))
    w.requires_grad = trained_w
    inputs = [x, a, b, m] + ([w] if trained_w else [])
    assert gradcheck(lambda *_: dora_linear(x, w, bias, a, b, m, 1.3, detach_norm=False), inputs)
    with pytest.raises(lora_np.GradcheckError):  # the detached gradient is not the exact one
        gradcheck(lambda *_: dora_linear(x, w, bias, a, b, m, 1.3), inputs)


def test_fused_op_equals_its_composition_from_primitive_ops(rng):
    x, w, bias, a, b, m = _op_inputs(rng, (2, 3, 6))
    x2, a2, b2, m2 = (Tensor(t.data.copy(), requires_grad=True) for t in (x, a, b, m))
    y = dora_linear(x, w, bias, a, b, m, 0.9)
    ref = reference.dora_linear(x2, w, bias, a2, b2, m2, 0.9)
    np.testing.assert_allclose(to_numpy(y), to_numpy(ref), rtol=1e-12, atol=1e-12)
    g = rng.standard_normal(y.shape)
    y.backward(g)
    ref.backward(g)
    for ours, theirs in ((x, x2), (a, a2), (b, b2), (m, m2)):
        np.testing.assert_allclose(to_numpy(ours.grad), to_numpy(theirs.grad), rtol=1e-11, atol=1e-12)


def test_closed_form_and_the_norm_per_output_column(rng):
    """W' = (W + s·AᵀBᵀ) ⊙ m/‖·‖ with the norm over the input axis of the (in, out) weight."""
    x, w, bias, a, b, m = _op_inputs(rng)
    xn, wn, bn, an, bbn, mn = (to_numpy(t) for t in (x, w, bias, a, b, m))
    v = wn + 0.5 * an.T @ bbn.T
    want = xn @ (v * (mn / np.linalg.norm(v, axis=0))) + bn
    np.testing.assert_allclose(to_numpy(dora_linear(x, w, bias, a, b, m, 0.5)), want, rtol=1e-12)


def test_bad_magnitude_shape(rng):
    x, w, bias, a, b, _ = _op_inputs(rng)
    with pytest.raises(ValueError, match=r"magnitude has shape \(6,\).*needs shape \(4,\)"):
        dora_linear(x, w, bias, a, b, leaf(rng, 6), 1.0)


# --- PEFT as the oracle ----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 1e-4)], ids=["float64", "float32"])
def test_peft_dora_adapter_loads_with_the_same_logits_and_gradients(tmp_path, rng, dtype, tol):
    peft = peft_gpt2(tmp_path, dtype, use_dora=True)
    ours = ours_from_peft_files(tmp_path, dtype)
    logit_err, errs = logit_and_grad_errors(ours, peft, rng.integers(0, 61, size=(2, 12)))
    assert logit_err < tol
    assert len(errs) == 2 * 3 * 3 and max(errs.values()) < tol  # 2 layers x 3 modules x (A, B, magnitude)
    assert sum(".lora_magnitude_vector." in n for n in errs) == 6


def test_our_dora_adapter_loads_in_peft_with_peft_s_key_names(tmp_path, rng):
    from peft import PeftModel
    from safetensors.numpy import load_file
    from transformers import GPT2LMHeadModel
    tiny_hf_gpt2(tmp_path / "base")
    ours = add_lora(load_gpt2(tmp_path / "base", dtype=np.float64),
                    LoraConfig(r=3, lora_alpha=6, target_modules=["c_attn", "c_fc"], use_dora=True))
    for name, p in ours.named_parameters():
        if ".lora_" in name:
            noise = 0.1 * rng.standard_normal(p.shape) if ".lora_B." in name else 0
            p.data = lora_np.backend.asarray(to_numpy(p) * rng.uniform(0.5, 1.5, p.shape) + noise)
    save_adapter(ours, tmp_path / "ours")
    keys = set(load_file(tmp_path / "ours" / "adapter_model.safetensors"))
    assert "base_model.model.transformer.h.0.mlp.c_fc.lora_magnitude_vector" in keys and len(keys) == 2 * 2 * 3
    assert json.loads((tmp_path / "ours" / "adapter_config.json").read_text())["use_dora"] is True
    peft = PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained(tmp_path / "base", dtype=torch.float64),
                                     tmp_path / "ours").eval()
    idx = rng.integers(0, 61, size=(2, 10))
    assert max_rel_err(to_numpy(ours(idx)[0]), peft(torch.tensor(idx)).logits) < 1e-9


def test_merge_unmerge_and_merged_weights_equal_peft_s(tmp_path, rng):
    peft = peft_gpt2(tmp_path, torch.float64, use_dora=True)
    ours = ours_from_peft_files(tmp_path, torch.float64)
    idx = rng.integers(0, 61, size=(2, 10))
    adapted = to_numpy(ours(idx)[0])
    w_before = to_numpy(ours.transformer.h[0].attn.c_attn.weight)
    merge_lora(ours)
    np.testing.assert_allclose(to_numpy(ours(idx)[0]), adapted, rtol=1e-10, atol=1e-12)
    merged_peft = peft.merge_and_unload()
    theirs = merged_peft.transformer.h[0].attn.c_attn.weight.detach().numpy()
    np.testing.assert_allclose(to_numpy(ours.transformer.h[0].attn.c_attn.weight), theirs, rtol=1e-12, atol=1e-14)
    unmerge_lora(ours)
    np.testing.assert_allclose(to_numpy(ours.transformer.h[0].attn.c_attn.weight), w_before, atol=1e-13)
    np.testing.assert_allclose(to_numpy(ours(idx)[0]), adapted, rtol=1e-10, atol=1e-12)
    plain = merge_and_unload(ours)
    np.testing.assert_allclose(to_numpy(plain(idx)[0]), adapted, rtol=1e-10, atol=1e-12)


def test_a_new_dora_adapter_is_the_base_at_step_0_and_trains(rng):
    model = lora_np.GPT(lora_np.GPTConfig(vocab_size=23, block_size=8, n_layer=2, n_head=2, n_embd=8), dtype=np.float64)
    idx = rng.integers(0, 23, size=(4, 8))
    base = to_numpy(model(idx)[0])
    add_lora(model, LoraConfig(r=2, target_modules=["c_attn", "c_fc"], use_dora=True))
    layer = model.transformer.h[1].mlp.c_fc
    np.testing.assert_allclose(to_numpy(layer.lora_magnitude_vector["default"].weight),
                               np.linalg.norm(to_numpy(layer.weight), axis=0), rtol=1e-14)  # m = ‖W‖ per output
    np.testing.assert_allclose(to_numpy(model(idx)[0]), base, rtol=1e-12, atol=1e-13)
    opt = lora_np.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = model(idx[:, :-1], idx[:, 1:])[1]
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] and layer.lora_magnitude_vector["default"].weight.grad is not None
    with disable_lora(model):
        np.testing.assert_array_equal(to_numpy(model(idx)[0]), base)


def test_old_peft_magnitude_key_loads_too(tmp_path, rng):
    """PEFT before 0.12 saved "...lora_magnitude_vector.weight"; PEFT still reads those files."""
    from lora_np.io.safetensors_file import read_safetensors, write_safetensors
    cfg = lora_np.GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=8)
    model = add_lora(lora_np.GPT(cfg, dtype=np.float64), LoraConfig(r=2, use_dora=True))
    for name, p in model.named_parameters():
        if ".lora_" in name:
            p.data = lora_np.backend.asarray(to_numpy(p) + 0.1 * rng.standard_normal(p.shape))
    save_adapter(model, tmp_path)
    tensors, _ = read_safetensors(tmp_path / "adapter_model.safetensors")
    write_safetensors(tmp_path / "adapter_model.safetensors",
                      {k + ".weight" if k.endswith("lora_magnitude_vector") else k: v for k, v in tensors.items()})
    fresh = lora_np.GPT(cfg, dtype=np.float64)
    fresh.load_state_dict({k: v for k, v in model.state_dict().items() if ".lora_" not in k})
    lora_np.load_adapter(fresh, tmp_path)
    idx = rng.integers(0, 20, size=(2, 8))
    np.testing.assert_array_equal(to_numpy(fresh(idx)[0]), to_numpy(model(idx)[0]))


@pytest.mark.parametrize("kwargs", [dict(targets=("c_attn", "c_fc"), use_dora=True), dict(targets=("wte", "c_proj"))],
                         ids=["dora", "wte"])
def test_trainable_parameter_line_equals_peft_s(tmp_path, capsys, kwargs):
    peft = peft_gpt2(tmp_path, torch.float32, **kwargs)
    ours = add_lora(load_gpt2(tmp_path / "base"), LoraConfig(r=4, lora_alpha=8, target_modules=kwargs["targets"],
                                                              use_dora=kwargs.get("use_dora", False)))
    capsys.readouterr()
    peft.print_trainable_parameters()
    assert lora_np.print_trainable_parameters(ours) == capsys.readouterr().out.strip().splitlines()[-1]


@pytest.mark.parametrize("kwargs", [dict(use_dora=True), dict(init_lora_weights="pissa"),
                                    dict(init_lora_weights="olora")],
                         ids=["dora", "pissa", "olora"])
def test_dora_pissa_olora_refuse_a_quantized_base_before_changing_it(kwargs):
    from lora_np.quant import quantize_model
    model = lora_np.GPT(lora_np.GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=64))
    quantize_model(model, "nf4")
    with pytest.raises(ValueError, match=r"needs the float weight of transformer.h.0.attn.c_attn, which is quantized"):
        add_lora(model, LoraConfig(r=2, **kwargs))
    assert not hasattr(model, "peft_config") and not lora_np.lora.lora_layers(model)
