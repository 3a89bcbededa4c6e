"""LoRA: the fused op (float64 gradchecks over every combination), PEFT as the oracle for files,
logits and gradients (both directions), and the invariants LoRA promises."""

import json

import numpy as np
import pytest
import torch

import lora_np
from lora_np import (GPT, GPTConfig, LoraConfig, LoraLinear, Tensor, add_lora, count_parameters, delete_adapter,
                     disable_lora, gradcheck, load_adapter, load_gpt2, lora_state_dict, merge_and_unload, merge_lora,
                     ops, print_trainable_parameters, save_adapter, save_gpt2, set_adapter, to_numpy, unmerge_lora)
from lora_np.optim import AdamW
from helpers import leaf
from hf_oracle import hf_loss, max_rel_err, tiny_hf_gpt2


def _gpt(dtype=np.float32, **kw):
    cfg = dict(vocab_size=23, block_size=8, n_layer=2, n_head=2, n_embd=8)
    return GPT(GPTConfig(**{**cfg, **kw}), dtype=dtype)


def _randomize_lora(model, rng, scale=0.3):
    """Non-zero B (and A), so the adapter actually changes the function."""
    for name, p in model.named_parameters():
        if ".lora_" in name:
            p.data = lora_np.backend.asarray((scale * rng.standard_normal(p.shape)).astype(p.dtype))


# --- the fused op ----------------------------------------------------------------------------------
@pytest.mark.parametrize("x_shape", [(5, 6), (2, 3, 6)], ids=["2d", "3d"])
@pytest.mark.parametrize("frozen_w", [True, False], ids=["frozen-W", "trained-W"])
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("dropout", [0.0, 0.4], ids=["no-dropout", "dropout"])
def test_lora_linear_gradcheck(x_shape, frozen_w, with_bias, dropout, rng):
    x, a, b = leaf(rng, *x_shape), leaf(rng, 3, 6), leaf(rng, 4, 3)
    w = Tensor(rng.standard_normal((6, 4)), requires_grad=not frozen_w)
    bias = Tensor(rng.standard_normal(4), requires_grad=not frozen_w) if with_bias else None
    inputs = [x, a, b] + ([w] if not frozen_w else []) + ([bias] if with_bias and not frozen_w else [])

    def f(x, a, b, *rest):
        lora_np.manual_seed(9)  # the same dropout mask in every evaluation
        return ops.lora_linear(x, w, bias, a, b, scaling=1.7, dropout_p=dropout)

    assert gradcheck(f, inputs)
    f(*inputs).sum().backward()
    assert (w.grad is None) == frozen_w  # a frozen W: no dW computed, no buffer


def test_lora_linear_forward_is_the_closed_form(rng):
    x, w, bias = rng.standard_normal((4, 6)), rng.standard_normal((6, 5)), rng.standard_normal(5)
    a, b = rng.standard_normal((2, 6)), rng.standard_normal((5, 2))
    y = ops.lora_linear(Tensor(x), Tensor(w), Tensor(bias), Tensor(a), Tensor(b), 0.5)
    np.testing.assert_allclose(to_numpy(y), x @ w + bias + 0.5 * x @ a.T @ b.T, rtol=1e-12)


def test_lora_linear_shape_mismatch(rng):
    with pytest.raises(ValueError, match=r"lora_A \(3, 5\).*need lora_A \(r, 6\)"):
        ops.lora_linear(leaf(rng, 2, 6), leaf(rng, 6, 4), None, leaf(rng, 3, 5), leaf(rng, 4, 3), 1.0)


# --- config and adding -----------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,match", [
    (dict(r=0), "r must"), (dict(r=-2), "r must"), (dict(r=2.5), "r must"), (dict(lora_alpha=0), "lora_alpha"),
    (dict(lora_alpha=-1), "lora_alpha"), (dict(lora_dropout=1.0), "lora_dropout"),
    (dict(lora_dropout=-0.1), "lora_dropout"), (dict(target_modules=[]), "target_modules"),
    (dict(target_modules=[3]), "target_modules"), (dict(use_rslora="yes"), "use_rslora")])
def test_bad_lora_configs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LoraConfig(**kwargs)


def test_scaling_plain_and_rslora():
    assert LoraConfig(r=4, lora_alpha=8).scaling == 2.0
    assert LoraConfig(r=4, lora_alpha=8, use_rslora=True).scaling == 4.0


def test_suffix_rule_freezing_and_names():
    model = add_lora(_gpt(), LoraConfig(r=2, target_modules=["c_proj"]))
    layers = [n for n, m in model.named_modules() if isinstance(m, LoraLinear)]
    assert layers == ["transformer.h.0.attn.c_proj", "transformer.h.0.mlp.c_proj",
                      "transformer.h.1.attn.c_proj", "transformer.h.1.mlp.c_proj"]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A.default." in n or ".lora_B.default." in n for n in trainable)
    assert "transformer.h.0.attn.c_proj.weight" in model.state_dict()  # base names unchanged


def test_regex_targets_like_peft():
    model = add_lora(_gpt(), LoraConfig(r=2, target_modules=r".*\.1\.attn\.c_attn"))
    assert [n for n, _ in lora_np.lora.lora_layers(model)] == ["transformer.h.1.attn.c_attn"]


def test_unmatched_target_lists_existing_linear_names():
    with pytest.raises(ValueError, match=r"match no Linear.*\['c_attn', 'c_fc', 'c_proj'\]"):
        add_lora(_gpt(), LoraConfig(target_modules=["q_proj"]))


def test_a_mistyped_target_beside_a_good_one_is_an_error():
    """Issue 35 item 4: ["c_attn", "cproj"] trained c_attn alone and wrote "cproj" into the config."""
    model = _gpt()
    before = {n: p.data.copy() for n, p in model.named_parameters()}
    with pytest.raises(ValueError, match=r"\['cproj'\] match no layer.*\['c_attn', 'c_fc', 'c_proj'\].*'wte'"):
        add_lora(model, LoraConfig(target_modules=["c_attn", "cproj"]))
    assert not lora_np.lora.lora_layers(model) and not hasattr(model, "peft_config")
    assert all(np.array_equal(p.data, before[n]) for n, p in model.named_parameters())


def test_rank_larger_than_layer_and_duplicate_names():
    with pytest.raises(ValueError, match=r"r=9 exceeds min\(in, out\) = 8"):
        add_lora(_gpt(), LoraConfig(r=9))
    model = add_lora(_gpt(), LoraConfig(r=2))
    with pytest.raises(ValueError, match="already exists"):
        add_lora(model, LoraConfig(r=2))
    with pytest.raises(ValueError, match="adapter_name"):
        add_lora(model, LoraConfig(r=2), adapter_name="a.b")


def test_init_is_peft_s_and_the_adapted_model_equals_the_base(rng):
    base = _gpt(np.float64)
    idx = rng.integers(0, 23, size=(3, 8))
    before = to_numpy(base(idx)[0])
    model = add_lora(base, LoraConfig(r=4, target_modules=["c_attn", "c_fc"]))
    np.testing.assert_array_equal(to_numpy(model(idx)[0]), before)  # B = 0: exactly the base
    layer = model.transformer.h[0].mlp.c_fc
    a, b = to_numpy(layer.lora_A["default"].weight), to_numpy(layer.lora_B["default"].weight)
    assert a.shape == (4, 8) and b.shape == (32, 4) and not b.any()
    assert np.abs(a).max() <= 1 / np.sqrt(8) and a.std() > 0.1  # U(-1/√in, 1/√in)


# --- PEFT as the oracle ----------------------------------------------------------------------------
def _peft_model(tmp_path, dtype, targets=("c_attn", "c_proj"), r=4, alpha=8, rslora=False):
    """HF GPT-2 (saved to tmp/base) wrapped by PEFT with random non-zero A and B (saved to tmp/adapter)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model
    hf = tiny_hf_gpt2(tmp_path / "base", dtype=dtype)
    cfg = PeftLoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), fan_in_fan_out=True,
                         init_lora_weights=False, use_rslora=rslora, task_type="CAUSAL_LM")
    peft = get_peft_model(hf, cfg).eval()
    peft.save_pretrained(tmp_path / "adapter")
    return peft


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 1e-4)], ids=["float64", "float32"])
@pytest.mark.parametrize("rslora", [False, True], ids=["alpha-over-r", "rslora"])
def test_peft_adapter_loads_with_the_same_logits_and_gradients(tmp_path, rng, dtype, tol, rslora):
    peft = _peft_model(tmp_path, dtype, rslora=rslora)
    ours = load_gpt2(tmp_path / "base", dtype=np.float64 if dtype == torch.float64 else np.float32)
    load_adapter(ours, tmp_path / "adapter")
    idx = rng.integers(0, 61, size=(2, 12))
    logits, _ = ours(idx[:, :-1])
    _, loss = ours(idx[:, :-1], idx[:, 1:])  # training: the fused LM head, no logits
    ref_logits, ref_loss = hf_loss(peft, idx[:, :-1], idx[:, 1:])
    assert max_rel_err(to_numpy(logits), ref_logits) < tol
    loss.backward()
    ref_loss.backward()
    ref = {n.removeprefix("base_model.model.").replace(".base_layer", ""): p for n, p in peft.named_parameters()}
    errs = [max_rel_err(to_numpy(p.grad), ref[n].grad) for n, p in ours.named_parameters() if p.requires_grad]
    assert len(errs) == 2 * 3 * 2 and max(errs) < tol  # 2 layers x (c_attn, attn.c_proj, mlp.c_proj) x (A, B)


def test_our_adapter_loads_in_peft(tmp_path, rng):
    from peft import PeftModel
    from transformers import GPT2LMHeadModel
    hf = tiny_hf_gpt2(tmp_path / "base")
    ours = add_lora(load_gpt2(tmp_path / "base", dtype=np.float64),
                    LoraConfig(r=3, lora_alpha=6, target_modules=["c_attn", "c_fc"]))
    _randomize_lora(ours, rng)
    save_adapter(ours, tmp_path / "ours")
    config = json.loads((tmp_path / "ours" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["fan_in_fan_out"] is True and config["bias"] == "none"
    peft = PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained(tmp_path / "base", dtype=torch.float64),
                                     tmp_path / "ours").eval()
    idx = rng.integers(0, 61, size=(2, 10))
    assert max_rel_err(to_numpy(ours(idx)[0]), peft(torch.tensor(idx)).logits) < 1e-9
    del hf


def test_trainable_parameter_line_equals_peft(tmp_path, capsys):
    peft = _peft_model(tmp_path, torch.float32)
    ours = add_lora(load_gpt2(tmp_path / "base"), LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "c_proj"]))
    peft.print_trainable_parameters()
    theirs = capsys.readouterr().out.strip()
    assert print_trainable_parameters(ours) == theirs


# --- invariants ------------------------------------------------------------------------------------
def _train(model, idx, steps=20, lr=1e-2):
    opt = AdamW(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        model(idx[:, :-1], idx[:, 1:])[1].backward()
        opt.step()
    return opt


def test_training_leaves_the_base_bit_identical_and_has_state_only_for_lora(rng):
    model = _gpt()
    base = model.state_dict()
    add_lora(model, LoraConfig(r=2, target_modules=["c_attn", "c_proj", "c_fc"]))
    idx = rng.integers(0, 23, size=(4, 8))
    loss0 = model(idx[:, :-1], idx[:, 1:])[1].item()
    opt = _train(model, idx)
    assert model(idx[:, :-1], idx[:, 1:])[1].item() < loss0
    after = model.state_dict()
    for name, value in base.items():
        np.testing.assert_array_equal(after[name], value)  # bit-identical
    lora_ids = {id(p) for n, p in model.named_parameters() if ".lora_" in n}
    assert opt.state and all(id(p) in lora_ids for p in opt.state)
    assert all(p.grad is None for n, p in model.named_parameters() if ".lora_" not in n)
    trainable, _ = count_parameters(model)
    assert opt.state_bytes() == 2 * 4 * trainable


def test_merge_unmerge_disable_and_unload(rng):
    model = _gpt(np.float64)
    idx = rng.integers(0, 23, size=(2, 8))
    base_logits = to_numpy(model(idx)[0])
    add_lora(model, LoraConfig(r=3, target_modules=["c_attn", "c_fc"]))
    _randomize_lora(model, rng)
    with disable_lora(model):
        np.testing.assert_array_equal(to_numpy(model(idx)[0]), base_logits)  # exactly the base
    adapted = to_numpy(model(idx)[0])
    assert not np.allclose(adapted, base_logits)
    w_before = to_numpy(model.transformer.h[0].attn.c_attn.weight)
    merge_lora(model)
    np.testing.assert_allclose(to_numpy(model(idx)[0]), adapted, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="unmerge"):
        with disable_lora(model):
            pass
    unmerge_lora(model)
    np.testing.assert_allclose(to_numpy(model.transformer.h[0].attn.c_attn.weight), w_before, atol=1e-14)
    with disable_lora(model):
        np.testing.assert_allclose(to_numpy(model(idx)[0]), base_logits, atol=1e-13)  # W back to rounding
    plain = merge_and_unload(model)
    assert not any(isinstance(m, LoraLinear) for _, m in plain.named_modules())
    assert not any(".lora_" in n for n in plain.state_dict())
    np.testing.assert_allclose(to_numpy(plain(idx)[0]), adapted, rtol=1e-10, atol=1e-12)


def test_merged_plain_model_saves_as_gpt2(tmp_path, rng):
    model = add_lora(_gpt(np.float64), LoraConfig(r=2))
    _randomize_lora(model, rng)
    with pytest.raises(ValueError, match="save_adapter"):
        save_gpt2(model, tmp_path)
    idx = rng.integers(0, 23, size=(1, 8))
    want = to_numpy(model(idx)[0])
    save_gpt2(merge_and_unload(model), tmp_path)
    np.testing.assert_allclose(to_numpy(load_gpt2(tmp_path, dtype=np.float64)(idx)[0]), want, rtol=1e-12)


def test_two_adapters_on_one_base_switch_correctly(rng):
    model = _gpt(np.float64)
    idx = rng.integers(0, 23, size=(2, 8))
    base = to_numpy(model(idx)[0])
    add_lora(model, LoraConfig(r=2))
    _randomize_lora(model, rng)
    a_out = to_numpy(model(idx)[0])
    add_lora(model, LoraConfig(r=4, target_modules=["c_fc"]), adapter_name="task_b")
    np.testing.assert_array_equal(to_numpy(model(idx)[0]), a_out)  # added inactive, like PEFT
    set_adapter(model, "task_b")
    for n, p in model.named_parameters():
        assert p.requires_grad == (".task_b." in n)
    np.testing.assert_array_equal(to_numpy(model(idx)[0]), base)  # task_b's B is still zero
    _randomize_lora(model, rng)
    b_out = to_numpy(model(idx)[0])
    set_adapter(model, "default")
    assert not np.allclose(to_numpy(model(idx)[0]), b_out)
    set_adapter(model, "task_b")
    np.testing.assert_array_equal(to_numpy(model(idx)[0]), b_out)
    assert set(lora_state_dict(model, "task_b")) == {
        f"transformer.h.{i}.mlp.c_fc.lora_{f}.task_b.weight" for i in range(2) for f in "AB"}
    delete_adapter(model, "task_b")
    assert lora_np.lora.active_adapter(model) == "default"
    assert not isinstance(model.transformer.h[0].mlp.c_fc, LoraLinear)
    with pytest.raises(ValueError, match="no adapter named 'task_b'"):
        set_adapter(model, "task_b")


def test_adapter_file_round_trip_into_a_fresh_base(tmp_path, rng):
    model = add_lora(_gpt(np.float64), LoraConfig(r=2, lora_alpha=5, target_modules=["c_attn"]))
    _randomize_lora(model, rng)
    sd = model.state_dict()
    save_adapter(model, tmp_path)
    fresh = _gpt(np.float64)
    fresh.load_state_dict({k: v for k, v in sd.items() if ".lora_" not in k})
    load_adapter(fresh, tmp_path, adapter_name="copy")
    idx = rng.integers(0, 23, size=(2, 8))
    np.testing.assert_array_equal(to_numpy(fresh(idx)[0]), to_numpy(model(idx)[0]))


def test_loading_an_adapter_for_another_base_changes_nothing(tmp_path, rng):
    other = add_lora(_gpt(n_embd=16), LoraConfig(r=2))
    save_adapter(other, tmp_path)
    model = _gpt()
    before = model.state_dict()
    with pytest.raises(ValueError, match=r"c_attn.lora_A.weight has shape \(2, 16\), the model needs \(2, 8\)"):
        load_adapter(model, tmp_path)
    assert model.state_dict().keys() == before.keys() and not hasattr(model, "peft_config")
    with pytest.raises(FileNotFoundError, match="adapter directory"):
        load_adapter(model, tmp_path / "missing")
    (tmp_path / "adapter_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="adapter_model.safetensors"):
        load_adapter(model, tmp_path)
