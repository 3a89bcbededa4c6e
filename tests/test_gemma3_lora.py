"""LoRA on Gemma 3 against PEFT, through the generic LoRA machinery: adapter files both ways (plain,
DoRA, "all-linear"), LoRA on the scaled, tied embedding, merging into a folder transformers loads,
and the NF4 base against transformers + bitsandbytes.

Oracle: PEFT on transformers' Gemma3ForCausalLM of the same folder, float64 ((1 + w) RMSNorm and
rotary tables kept in float64, ``gemma3_oracle.float64_gemma3``).
"""

import numpy as np
import pytest
import torch
from transformers import Gemma3ForCausalLM

import lora_np as ln
from lora_np import LoraConfig, add_lora, load_adapter, save_adapter, to_numpy
from lora_np.app.model_dir import default_lora_targets
from lora_np.lora import lora_layers
from gemma3_oracle import SIZES, float64_gemma3, load_hf, tiny_hf_gemma3
from hf_oracle import assert_nf4_base_equals_bnb_and_trains, max_rel_err
from peft_oracle import logit_and_grad_errors, perturb_magnitudes

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LAYERS = SIZES["num_hidden_layers"]


def _ids(rng, batch=2, length=14):
    return rng.integers(1, SIZES["vocab_size"], size=(batch, length))


def _peft(tmp_path, targets=("q_proj", "v_proj"), seed=1, **lora_kwargs):
    """transformers' model of tmp/base (float64) wrapped by PEFT with random adapter weights, saved in
    tmp/adapters (without a copy of the base embedding: PEFT would add one when embed_tokens is a target)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model
    tiny_hf_gemma3(tmp_path / "base")
    torch.manual_seed(seed)
    cfg = PeftLoraConfig(r=4, lora_alpha=8, target_modules=targets if isinstance(targets, str) else list(targets),
                         init_lora_weights=False, **lora_kwargs)
    peft = get_peft_model(load_hf(tmp_path / "base"), cfg).eval()
    perturb_magnitudes(peft, seed)
    peft.save_pretrained(tmp_path / "adapters", save_embedding_layers=False)
    return peft


@pytest.mark.parametrize("targets,dora", [(("q_proj", "v_proj"), False), ("all-linear", False),
                                          ("all-linear", True)])
def test_peft_adapter_files_load_with_the_same_logits_and_gradients(targets, dora, tmp_path, rng):
    with float64_gemma3():
        peft = _peft(tmp_path, targets, use_dora=dora)
        ours = ln.load_model(tmp_path / "base", dtype=np.float64)
        load_adapter(ours, tmp_path / "adapters")
        logit_err, errs = logit_and_grad_errors(ours, peft, _ids(rng))
    per_layer = 2 if isinstance(targets, tuple) else len(PROJECTIONS)
    assert len(errs) == LAYERS * per_layer * (3 if dora else 2)
    assert logit_err < 1e-10 and max(errs.values()) < 1e-9, max(errs.items(), key=lambda kv: kv[1])


def test_lora_on_the_scaled_embedding_equals_peft_s(tmp_path, rng):
    """LoRA on embed_tokens: the adapter's rows are scaled by √hidden_size with the table's (PEFT
    scales the LoRA part of Gemma's scaled embedding too); the tied head keeps the base table."""
    with float64_gemma3():
        peft = _peft(tmp_path, ["embed_tokens", "q_proj"])
        ours = ln.load_model(tmp_path / "base", dtype=np.float64)
        load_adapter(ours, tmp_path / "adapters")
        logit_err, errs = logit_and_grad_errors(ours, peft, _ids(rng))
    assert any("embed_tokens" in name for name in errs)
    assert logit_err < 1e-10 and max(errs.values()) < 1e-9, max(errs.items(), key=lambda kv: kv[1])


def test_our_adapter_file_loads_in_peft_and_merged_folder_in_transformers(tmp_path, rng):
    from peft import PeftModel
    tiny_hf_gemma3(tmp_path / "base")
    ours = ln.load_model(tmp_path / "base", dtype=np.float64)
    add_lora(ours, LoraConfig(r=3, lora_alpha=6, target_modules="all-linear", init_lora_weights=False))
    save_adapter(ours, tmp_path / "ours")
    idx = _ids(rng)
    with ln.no_grad():
        logits = to_numpy(ours(idx)[0].data)
    with float64_gemma3(), torch.no_grad():
        peft = PeftModel.from_pretrained(load_hf(tmp_path / "base"), tmp_path / "ours").eval()
        assert max_rel_err(logits, peft(torch.tensor(idx)).logits) < 1e-10
        ln.save_model(ln.merge_and_unload(ours), tmp_path / "merged")
        assert max_rel_err(logits, load_hf(tmp_path / "merged")(torch.tensor(idx)).logits) < 1e-10


def test_default_targets_and_all_linear(tmp_path):
    tiny_hf_gemma3(tmp_path)
    model = add_lora(ln.load_model(tmp_path), LoraConfig(r=2, target_modules="all-linear"))
    assert sorted(n.rsplit(".", 1)[-1] for n, _ in lora_layers(model)) == sorted(PROJECTIONS * LAYERS)
    assert tuple(default_lora_targets(tmp_path)) == ("q_proj", "v_proj")


def test_nf4_base_equals_transformers_bitsandbytes_and_trains(tmp_path, rng):
    pytest.importorskip("bitsandbytes")
    tiny_hf_gemma3(tmp_path, hidden_size=64, intermediate_size=128, head_dim=16)
    assert_nf4_base_equals_bnb_and_trains(Gemma3ForCausalLM, tmp_path, _ids(rng))
