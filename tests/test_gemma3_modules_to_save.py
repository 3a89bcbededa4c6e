"""PEFT's ``modules_to_save=["embed_tokens"]`` on Gemma 3 (a trainable full copy of the scaled, tied
embedding, saved in the adapter file) both ways, and LoRA beside it.

Oracle: PEFT on transformers' Gemma3ForCausalLM, float64 (``gemma3_oracle.float64_gemma3``): PEFT's
file loads here with PEFT's logits and every gradient (the copy's included), and PEFT loads our file
with our logits. PEFT's default keeps the tied head on the base table (``ensure_weight_tying`` False),
so the copy changes the lookup only; a file written with ensure_weight_tying is refused.
"""

import json

import numpy as np
import pytest
import torch

import lora_np as ln
from lora_np import LoraConfig, add_lora, load_adapter, save_adapter, to_numpy
from gemma3_oracle import SIZES, float64_gemma3, load_hf, tiny_hf_gemma3
from hf_oracle import max_rel_err
from peft_oracle import logit_and_grad_errors

peft = pytest.importorskip("peft")
EMBEDDING = "model.embed_tokens.modules_to_save.default.weight"


def _ids(rng):
    return rng.integers(1, SIZES["vocab_size"], size=(2, 14))


def _peft_model(tmp_path, **kwargs):
    """PEFT with LoRA on q_proj and a saved embedding copy moved away from the base table."""
    tiny_hf_gemma3(tmp_path / "base")
    torch.manual_seed(1)
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], modules_to_save=["embed_tokens"],
                          init_lora_weights=False, **kwargs)
    model = peft.get_peft_model(load_hf(tmp_path / "base"), cfg).eval()
    with torch.no_grad():
        copy = model.base_model.model.model.embed_tokens.modules_to_save["default"].weight
        copy.add_(0.3 * torch.randn_like(copy))
    model.save_pretrained(tmp_path / "adapters")
    return model


def test_pefts_saved_embedding_loads_with_the_same_logits_and_gradients(tmp_path, rng):
    with float64_gemma3():
        theirs = _peft_model(tmp_path)
        ours = ln.load_model(tmp_path / "base", dtype=np.float64)
        load_adapter(ours, tmp_path / "adapters")
        logit_err, errs = logit_and_grad_errors(ours, theirs, _ids(rng))
    assert EMBEDDING in errs and len(errs) == 1 + 2 * SIZES["num_hidden_layers"]
    assert logit_err < 1e-10 and max(errs.values()) < 1e-9, max(errs.items(), key=lambda kv: kv[1])
    assert not ours.model.embed_tokens.weight.requires_grad  # the base table (and so the tied head) stays


def test_our_saved_embedding_loads_in_peft(tmp_path, rng):
    tiny_hf_gemma3(tmp_path / "base")
    ours = ln.load_model(tmp_path / "base", dtype=np.float64)
    add_lora(ours, LoraConfig(r=3, lora_alpha=6, target_modules=["v_proj"], modules_to_save=["embed_tokens"],
                              init_lora_weights=False))
    copy = dict(ours.named_parameters())[EMBEDDING]
    assert copy.requires_grad and np.array_equal(to_numpy(copy.data), to_numpy(ours.model.embed_tokens.weight.data))
    copy.data = copy.data + 0.3 * np.random.default_rng(2).standard_normal(copy.shape)
    save_adapter(ours, tmp_path / "ours")
    assert json.loads((tmp_path / "ours" / "adapter_config.json").read_text())["modules_to_save"] == ["embed_tokens"]
    idx = _ids(rng)
    with ln.no_grad():
        logits = to_numpy(ours(idx)[0].data)
    with float64_gemma3(), torch.no_grad():
        theirs = peft.PeftModel.from_pretrained(load_hf(tmp_path / "base"), tmp_path / "ours").eval()
        assert max_rel_err(logits, theirs(torch.tensor(idx)).logits) < 1e-10


def test_what_modules_to_save_refuses(tmp_path):
    _peft_model(tmp_path, ensure_weight_tying=True)
    with pytest.raises(ValueError, match="ensure_weight_tying"):
        load_adapter(ln.load_model(tmp_path / "base"), tmp_path / "adapters")
    model = ln.load_model(tmp_path / "base")
    with pytest.raises(ValueError, match="name no token embedding"):
        add_lora(model, LoraConfig(target_modules=["q_proj"], modules_to_save=["lm_head"]))
    with pytest.raises(ValueError, match="both a LoRA target and in modules_to_save"):
        add_lora(model, LoraConfig(target_modules=["q_proj", "embed_tokens"], modules_to_save=["embed_tokens"]))
    add_lora(model, LoraConfig(r=2, target_modules=["q_proj"], modules_to_save=["embed_tokens"]))
    with pytest.raises(ValueError, match="tied LM head"):
        ln.merge_and_unload(model)
