"""LoRA on the token embedding ``wte``: PEFT's lora_embedding_A/B names and layouts, the tied LM head left
on the base weight as PEFT 0.21.2 leaves it, files both ways, gradients equal to PEFT's."""

import numpy as np
import pytest
import torch

import lora_np
from lora_np import GPT, GPTConfig, LoraConfig, LoraEmbedding, add_lora, load_gpt2, merge_lora, save_adapter, to_numpy
from hf_oracle import max_rel_err, tiny_hf_gpt2
from peft_oracle import logit_and_grad_errors, ours_from_peft_files, peft_gpt2


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 1e-4)], ids=["float64", "float32"])
def test_peft_wte_adapter_loads_with_the_same_logits_and_gradients(tmp_path, rng, dtype, tol):
    peft = peft_gpt2(tmp_path, dtype, targets=("c_attn", "wte"))
    ours = ours_from_peft_files(tmp_path, dtype)
    assert isinstance(ours.transformer.wte, LoraEmbedding)
    logit_err, errs = logit_and_grad_errors(ours, peft, rng.integers(0, 61, size=(3, 12)))
    assert logit_err < tol
    assert {"transformer.wte.lora_embedding_A.default", "transformer.wte.lora_embedding_B.default"} <= set(errs)
    assert len(errs) == 2 + 2 * 2 and max(errs.values()) < tol


def test_the_lm_head_reads_the_base_embedding_as_in_peft(tmp_path, rng):
    """logits = ln_f(h) · Eᵀ with the base E, while the lookup uses E + ΔE (PEFT 0.21.2 on GPT-2)."""
    tiny_hf_gpt2(tmp_path / "base")
    model = add_lora(load_gpt2(tmp_path / "base", dtype=np.float64), LoraConfig(r=2, target_modules=["wte"]))
    wte = model.transformer.wte
    wte.lora_embedding_A["default"].data = lora_np.backend.asarray(rng.standard_normal((2, 61)))
    idx = rng.integers(0, 61, size=(2, 6))
    e = to_numpy(wte.weight)
    hidden = to_numpy(model.hidden_states(idx))
    np.testing.assert_allclose(to_numpy(model(idx)[0]), hidden @ e.T, rtol=1e-12)
    delta = to_numpy(wte.delta_weight("default"))
    np.testing.assert_allclose(to_numpy(wte(idx)), (e + delta)[idx], rtol=1e-12)
    with pytest.raises(ValueError, match="tied LM head"):
        merge_lora(model)
    assert wte.merged_adapter is None and np.array_equal(to_numpy(wte.weight), e)


def test_our_wte_adapter_loads_in_peft(tmp_path, rng):
    from peft import PeftModel
    from transformers import GPT2LMHeadModel
    tiny_hf_gpt2(tmp_path / "base")
    ours = add_lora(load_gpt2(tmp_path / "base", dtype=np.float64),
                    LoraConfig(r=3, lora_alpha=6, target_modules=["wte", "c_fc"]))
    for name, p in ours.named_parameters():
        if ".lora_" in name:
            p.data = lora_np.backend.asarray(0.3 * rng.standard_normal(p.shape))
    save_adapter(ours, tmp_path / "ours")
    peft = PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained(tmp_path / "base", dtype=torch.float64),
                                     tmp_path / "ours").eval()
    idx = rng.integers(0, 61, size=(2, 10))
    assert max_rel_err(to_numpy(ours(idx)[0]), peft(torch.tensor(idx)).logits) < 1e-9


def test_init_is_peft_s_and_the_adapted_model_is_the_base(rng):
    model = GPT(GPTConfig(vocab_size=50, block_size=8, n_layer=1, n_head=2, n_embd=16), dtype=np.float64)
    idx = rng.integers(0, 50, size=(2, 8))
    base = to_numpy(model(idx)[0])
    add_lora(model, LoraConfig(r=4, target_modules=["wte"]))
    a = to_numpy(model.transformer.wte.lora_embedding_A["default"])
    b = to_numpy(model.transformer.wte.lora_embedding_B["default"])
    assert a.shape == (4, 50) and not a.any() and b.shape == (16, 4) and 0.7 < b.std() < 1.3  # A = 0, B ~ N(0, 1)
    np.testing.assert_array_equal(to_numpy(model(idx)[0]), base)


@pytest.mark.parametrize("kwargs,match", [
    (dict(use_dora=True), r"use_dora=True applies to Linear layers"),
    (dict(init_lora_weights="pissa"),
     r"init_lora_weights='pissa' applies to Linear layers only.*True, 'gaussian' or False"),
    (dict(target_modules=["wpe"]), r"token embedding \['wte', 'embed_tokens'\] only; transformer.wpe")])
def test_what_the_embedding_refuses(kwargs, match):
    model = GPT(GPTConfig(vocab_size=50, block_size=8, n_layer=1, n_head=2, n_embd=16))
    before = model.state_dict()
    with pytest.raises(ValueError, match=match):
        add_lora(model, LoraConfig(r=2, **{"target_modules": ["wte", "c_attn"], **kwargs}))
    assert model.state_dict().keys() == before.keys() and not hasattr(model, "peft_config")
