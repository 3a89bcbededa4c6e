"""init_lora_weights: True, "gaussian", "pissa", "olora", as PEFT defines them, in GPT-2's (in, out) layout.

Oracles: PEFT's pissa_init on GPT-2's Conv1D (PEFT transposes it correctly); PEFT's olora_init on an
nn.Linear holding Wᵀ (PEFT 0.21.2's olora_init does not transpose a Conv1D weight, see lora/init.py);
the closed forms (SVD, QR, the distributions)."""

import json

import numpy as np
import pytest
import torch

import lora_np
from lora_np import GPT, GPTConfig, LoraConfig, add_lora, disable_lora, load_gpt2, save_adapter, to_numpy
from lora_np.lora.init import lora_factors
from hf_oracle import max_rel_err
from peft_oracle import ours_from_peft_files, peft_gpt2

TARGETS = ("c_attn", "c_fc")


def _gpt(dtype=np.float64):
    return GPT(GPTConfig(vocab_size=23, block_size=8, n_layer=2, n_head=2, n_embd=16), dtype=dtype)


def _peft_layer(peft, name):
    return peft.base_model.model.get_submodule(name)


def test_pissa_residual_and_factors_equal_peft_s_on_gpt2(tmp_path):
    peft = peft_gpt2(tmp_path, torch.float32, targets=TARGETS, r=4, alpha=8, init_lora_weights="pissa")
    ours = add_lora(load_gpt2(tmp_path / "base"), LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS,
                                                              init_lora_weights="pissa"))
    checked = 0
    for name, layer in lora_np.lora.lora_layers(ours):
        theirs = _peft_layer(peft, name)
        # PEFT's SVD runs in float32, ours in float64: agreement to float32's SVD accuracy
        assert max_rel_err(to_numpy(layer.weight), theirs.base_layer.weight) < 5e-5
        a, b = to_numpy(layer.lora_A["default"].weight), to_numpy(layer.lora_B["default"].weight)
        ta, tb = theirs.lora_A["default"].weight.detach().numpy(), theirs.lora_B["default"].weight.detach().numpy()
        signs = np.sign(np.sum(a * ta, axis=1))  # each singular pair's sign is the SVD library's choice
        assert max_rel_err(a * signs[:, None], ta) < 1e-4 and max_rel_err(b * signs[None, :], tb) < 1e-4
        checked += 1
    assert checked == 4


def test_olora_factors_and_residual_equal_peft_s_on_nn_linear(rng):
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model
    w = rng.standard_normal((12, 20)).astype(np.float32)          # ours: (in, out)
    holder = torch.nn.Module()
    holder.c_fc = torch.nn.Linear(12, 20)
    with torch.no_grad():
        holder.c_fc.weight.copy_(torch.tensor(w.T))                # nn.Linear: (out, in) = Wᵀ
    peft = get_peft_model(holder, PeftLoraConfig(r=3, lora_alpha=5, target_modules=["c_fc"], init_lora_weights="olora"))
    theirs = peft.base_model.model.c_fc
    a, b, residual = lora_factors(lora_np.backend.asarray(w), 3, 5 / 3, "olora")
    assert max_rel_err(to_numpy(a), theirs.lora_A["default"].weight) < 1e-5
    assert max_rel_err(to_numpy(b), theirs.lora_B["default"].weight) < 1e-5
    assert max_rel_err(to_numpy(residual).T, theirs.base_layer.weight) < 1e-5


@pytest.mark.parametrize("how", ["pissa", "olora"])
def test_closed_forms_and_the_adapted_model_is_the_base_at_step_0(how, rng):
    model = _gpt()
    idx = rng.integers(0, 23, size=(3, 8))
    base = to_numpy(model(idx)[0])
    w = to_numpy(model.transformer.h[0].mlp.c_fc.weight)
    add_lora(model, LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights=how))
    np.testing.assert_allclose(to_numpy(model(idx)[0]), base, rtol=1e-11, atol=1e-12)
    layer = model.transformer.h[0].mlp.c_fc
    a, b = to_numpy(layer.lora_A["default"].weight), to_numpy(layer.lora_B["default"].weight)
    if how == "pissa":  # s·BA is the best rank-4 approximation of Wᵀ (Eckart–Young): the residual's norm
        s_vals = np.linalg.svd(w, compute_uv=False)
        np.testing.assert_allclose(np.linalg.norm(to_numpy(layer.weight)), np.sqrt((s_vals[4:] ** 2).sum()), rtol=1e-10)
    else:               # B has orthonormal columns and BA is the first 4 columns' part of Wᵀ's QR
        np.testing.assert_allclose(b.T @ b, np.eye(4), atol=1e-12)
        q = np.linalg.qr(w.T)[0]
        np.testing.assert_allclose(np.abs(b), np.abs(q[:, :4]), atol=1e-10)
    with disable_lora(model):  # the base is now the residual, no longer the original
        assert not np.allclose(to_numpy(model(idx)[0]), base)
    assert a.shape == (4, 16) and b.shape == (64, 4)


def test_gaussian_and_default_distributions():
    model = add_lora(_gpt(), LoraConfig(r=4, target_modules=["c_fc"], init_lora_weights="gaussian"))
    a = np.concatenate([to_numpy(layer.lora_A["default"].weight).ravel()
                        for _, layer in lora_np.lora.lora_layers(model)])
    assert abs(a.std() - 1 / 4) < 0.03 and abs(a.mean()) < 0.03           # N(0, (1/r)²), PEFT's gaussian
    assert not any(to_numpy(layer.lora_B["default"].weight).any() for _, layer in lora_np.lora.lora_layers(model))
    model = add_lora(_gpt(), LoraConfig(r=4, target_modules=["c_fc"], init_lora_weights=False))
    b = to_numpy(model.transformer.h[0].mlp.c_fc.lora_B["default"].weight)
    assert np.abs(b).max() <= 1 / 2 and b.std() > 0.2                    # U(-1/√r, 1/√r): nn.Linear's default


def test_a_pissa_adapter_saved_by_peft_loads_with_the_same_logits(tmp_path, rng):
    """PEFT replays pissa_init on the base when loading (the saved config says "pissa"); so do we."""
    peft = peft_gpt2(tmp_path, torch.float32, targets=TARGETS, init_lora_weights="pissa")
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_" in name:
                p.add_(0.05 * torch.randn(p.shape))
    peft.save_pretrained(tmp_path / "adapters")
    assert json.loads((tmp_path / "adapters" / "adapter_config.json").read_text())["init_lora_weights"] == "pissa"
    ours = ours_from_peft_files(tmp_path, torch.float32)
    idx = rng.integers(0, 61, size=(2, 10))
    assert max_rel_err(to_numpy(ours(idx)[0]), peft(torch.tensor(idx)).logits) < 1e-4
    save_adapter(ours, tmp_path / "ours")
    assert json.loads((tmp_path / "ours" / "adapter_config.json").read_text())["init_lora_weights"] == "pissa"


@pytest.mark.parametrize("bad", ["svd", "PiSSA ", 1, None, "loftq"])
def test_unknown_init_names_the_accepted_ones(bad):
    with pytest.raises(ValueError,
                       match=r"init_lora_weights must be one of \[True, 'gaussian', 'pissa', 'olora', False\]"):
        LoraConfig(init_lora_weights=bad)
