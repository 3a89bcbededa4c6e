"""LoRA on the Llama family against PEFT: adapter files both ways (plain, DoRA, "all-linear"),
merging into a folder transformers loads, PiSSA/OLoRA initialisation, LoRA+ groups, mixed-adapter
batches, weighted adapters, and the NF4 base against transformers + bitsandbytes.

Oracle: PEFT on transformers' model of the same folder, float64 where the comparison is exact
(RMSNorm and rotary tables kept in float64, ``llama_oracle.float64_transformers``).
"""

import json
import warnings

import numpy as np
import pytest
import torch
from transformers import LlamaForCausalLM

import lora_np as ln
from lora_np import LoraConfig, add_lora, add_weighted_adapter, adapter_names_per_row, load_adapter, save_adapter
from lora_np import set_adapter, to_numpy
from lora_np.lora import linear_kinds, lora_layers
from lora_np.optim import loraplus_param_groups
from hf_oracle import assert_nf4_base_equals_bnb_and_trains, max_rel_err
from llama_oracle import SIZES, float64_transformers, load_hf, tiny_hf_llama
from peft_oracle import logit_and_grad_errors, perturb_magnitudes

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _ids(rng, batch=2, length=12):
    return rng.integers(0, SIZES["vocab_size"], size=(batch, length))


def _peft(tmp_path, kind="llama", targets=("q_proj", "v_proj"), seed=1, dtype=torch.float64, **lora_kwargs):
    """transformers' model of tmp/base wrapped by PEFT with random adapter weights, saved in tmp/adapters."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model
    tiny_hf_llama(tmp_path / "base", kind, bos_token_id=None, eos_token_id=None)
    torch.manual_seed(seed)
    cfg = PeftLoraConfig(r=4, lora_alpha=8, target_modules=targets if isinstance(targets, str) else list(targets),
                         init_lora_weights=lora_kwargs.pop("init_lora_weights", False), **lora_kwargs)
    peft = get_peft_model(load_hf(tmp_path / "base", kind, dtype), cfg).eval()
    perturb_magnitudes(peft, seed)
    peft.save_pretrained(tmp_path / "adapters")
    return peft


@pytest.mark.parametrize("kind,targets,dora", [("llama", ("q_proj", "v_proj"), False), ("qwen2", "all-linear", False),
                                               ("qwen3", "all-linear", True),
                                               ("llama", ("gate_proj", "down_proj"), True)])
def test_peft_adapter_files_load_with_the_same_logits_and_gradients(kind, targets, dora, tmp_path, rng):
    with float64_transformers():
        peft = _peft(tmp_path, kind, targets, use_dora=dora)
        ours = ln.load_model(tmp_path / "base", dtype=np.float64)
        load_adapter(ours, tmp_path / "adapters")
        logit_err, errs = logit_and_grad_errors(ours, peft, _ids(rng))
    per_layer = 2 if isinstance(targets, tuple) else len(PROJECTIONS)
    assert len(errs) == SIZES["num_hidden_layers"] * per_layer * (3 if dora else 2)
    assert logit_err < 1e-10 and max(errs.values()) < 1e-9, max(errs.items(), key=lambda kv: kv[1])


def test_all_linear_targets_every_projection_and_not_the_head(tmp_path):
    tiny_hf_llama(tmp_path, "qwen3")
    model = add_lora(ln.load_model(tmp_path), LoraConfig(r=2, target_modules="all-linear"))
    names = sorted(n.rsplit(".", 1)[-1] for n, _ in lora_layers(model))
    assert names == sorted(PROJECTIONS * SIZES["num_hidden_layers"])


def test_linear_kinds_are_the_model_s_own_projections(tmp_path):
    """real-demo's targets: the Linear layers' name endings read from the model, in its order; as a list of
    target_modules they adapt the layers "all-linear" does."""
    tiny_hf_llama(tmp_path, "qwen3")
    model = ln.load_model(tmp_path)
    assert linear_kinds(model) == PROJECTIONS
    assert linear_kinds(ln.GPT(ln.GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8))) == (
        "c_attn", "c_proj", "c_fc")
    add_lora(model, LoraConfig(r=2, target_modules=linear_kinds(model)))
    assert linear_kinds(model) == PROJECTIONS  # adapted layers are still Linear layers of their kind
    assert sorted(n for n, _ in lora_layers(model)) == sorted(
        n for n, _ in lora_layers(add_lora(ln.load_model(tmp_path), LoraConfig(r=2, target_modules="all-linear"))))


def test_our_adapter_file_loads_in_peft_and_merged_folder_in_transformers(tmp_path, rng):
    from peft import PeftModel
    tiny_hf_llama(tmp_path / "base", "qwen2", bos_token_id=None, eos_token_id=None)
    ours = ln.load_model(tmp_path / "base", dtype=np.float64)
    add_lora(ours, LoraConfig(r=3, lora_alpha=6, target_modules="all-linear", init_lora_weights=False))
    save_adapter(ours, tmp_path / "ours")
    # nn.Linear stores (out, in): PEFT's flag is False for the Llama family (True only for GPT-2's Conv1D)
    assert json.loads((tmp_path / "ours" / "adapter_config.json").read_text())["fan_in_fan_out"] is False
    idx = _ids(rng)
    with ln.no_grad():
        logits = to_numpy(ours(idx)[0].data)
    with float64_transformers(), torch.no_grad():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            peft = PeftModel.from_pretrained(load_hf(tmp_path / "base", "qwen2"), tmp_path / "ours").eval()
        assert not [w for w in caught if "fan_in_fan_out" in str(w.message)], [str(w.message) for w in caught]
        assert max_rel_err(logits, peft(torch.tensor(idx)).logits) < 1e-10
        ln.save_model(ln.merge_and_unload(ours), tmp_path / "merged")
        merged = load_hf(tmp_path / "merged", "qwen2")
        assert max_rel_err(logits, merged(torch.tensor(idx)).logits) < 1e-10
        assert max_rel_err(logits, peft.merge_and_unload()(torch.tensor(idx)).logits) < 1e-10


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_pissa_and_olora_residual_and_factors_equal_peft_s(init, tmp_path):
    """float32 on both sides: PEFT's SVD/QR run in float32 (so agreement to float32 accuracy)."""
    peft = _peft(tmp_path, "llama", ("q_proj", "up_proj"), dtype=torch.float32, init_lora_weights=init)
    ours = add_lora(ln.load_model(tmp_path / "base"),
                    LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "up_proj"], init_lora_weights=init))
    for name, layer in lora_layers(ours):
        theirs = peft.base_model.model.get_submodule(name)
        assert max_rel_err(to_numpy(layer.weight).T, theirs.base_layer.weight) < 5e-5
        a, b = to_numpy(layer.lora_A["default"].weight), to_numpy(layer.lora_B["default"].weight)
        ta, tb = theirs.lora_A["default"].weight.detach().numpy(), theirs.lora_B["default"].weight.detach().numpy()
        signs = np.sign(np.sum(a * ta, axis=1))  # an SVD's pair signs are the library's choice
        assert max_rel_err(a * signs[:, None], ta) < 1e-4 and max_rel_err(b * signs[None, :], tb) < 1e-4
    assert len(lora_layers(ours)) == 2 * SIZES["num_hidden_layers"]


def test_loraplus_groups_equal_peft_s(tmp_path):
    from peft.optimizers import create_loraplus_optimizer
    peft = _peft(tmp_path, "qwen3", "all-linear", dtype=torch.float32, use_dora=True)
    theirs = create_loraplus_optimizer(peft, torch.optim.AdamW, lr=2e-3, loraplus_lr_ratio=16.0)
    names = {id(p): n.removeprefix("base_model.model.").replace(".base_layer", "") for n, p in peft.named_parameters()}
    their_lr = {names[id(p)]: g["lr"] for g in theirs.param_groups for p in g["params"]}
    ours = add_lora(ln.load_model(tmp_path / "base"), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                                 use_dora=True))
    lr_of = {id(p): g["lr"] for g in loraplus_param_groups(ours, lr=2e-3, ratio=16.0) for p in g["params"]}
    ours_lr = {n: lr_of[id(p)] for n, p in ours.named_parameters() if id(p) in lr_of}
    assert ours_lr == pytest.approx(their_lr) and len(ours_lr) == 3 * 7 * SIZES["num_hidden_layers"]


def _two_adapters(tmp_path):
    from peft import LoraConfig as PeftLoraConfig
    peft = _peft(tmp_path, "qwen3", ("q_proj", "v_proj", "gate_proj"))
    torch.manual_seed(2)
    peft.add_adapter("task_b", PeftLoraConfig(r=4, lora_alpha=5, target_modules=["k_proj", "v_proj", "down_proj"],
                                              init_lora_weights=False))
    peft.save_pretrained(tmp_path / "adapters", selected_adapters=["task_b"])
    ours = ln.load_model(tmp_path / "base", dtype=np.float64)
    load_adapter(ours, tmp_path / "adapters")
    load_adapter(ours, tmp_path / "adapters" / "task_b", adapter_name="task_b")
    return peft, ours


def test_mixed_adapter_batch_equals_peft_s_adapter_names(tmp_path, rng):
    names = ["task_b", "__base__", "default", "task_b"]
    idx = _ids(rng, batch=4)
    with float64_transformers():
        peft, ours = _two_adapters(tmp_path)
        with torch.no_grad():
            theirs = peft(torch.tensor(idx), adapter_names=names).logits
    with ln.no_grad(), adapter_names_per_row(ours, names):
        assert max_rel_err(to_numpy(ours(idx)[0].data), theirs) < 1e-10


@pytest.mark.parametrize("combination", ["linear", "cat", "svd"])
def test_weighted_adapter_equals_peft_s(combination, tmp_path, rng):
    idx = _ids(rng)
    with float64_transformers():
        peft, ours = _two_adapters(tmp_path)
        peft.add_weighted_adapter(["default", "task_b"], [0.7, -1.3], "mix", combination_type=combination)
        peft.set_adapter("mix")
        with torch.no_grad():
            theirs = peft(torch.tensor(idx)).logits
    add_weighted_adapter(ours, ["default", "task_b"], [0.7, -1.3], "mix", combination_type=combination)
    set_adapter(ours, "mix")
    with ln.no_grad():
        assert max_rel_err(to_numpy(ours(idx)[0].data), theirs) < 1e-6  # PEFT combines in float32, as for GPT-2


def test_nf4_base_equals_transformers_bitsandbytes_and_trains(tmp_path, rng):
    pytest.importorskip("bitsandbytes")
    tiny_hf_llama(tmp_path, "llama", hidden_size=64, intermediate_size=128, num_attention_heads=4,
                  num_key_value_heads=2, bos_token_id=None, eos_token_id=None)
    assert_nf4_base_equals_bnb_and_trains(LlamaForCausalLM, tmp_path, _ids(rng))


def test_all_linear_given_as_a_list_is_peft_s_string():
    assert LoraConfig(target_modules=["all-linear"]).target_modules == "all-linear"
    assert LoraConfig(target_modules="all-linear").target_modules == "all-linear"
