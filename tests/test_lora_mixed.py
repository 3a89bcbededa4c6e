"""Mixed-adapter batches: row i with adapter_names[i] equals row i alone with that adapter active
(oracle 1: our own single-adapter forward, itself checked against PEFT; oracle 2: PEFT's adapter_names).
The model knows nothing of them: ``adapter_names_per_row`` works on the adapted layers alone."""

import numpy as np
import pytest
import torch

import lora_np
from lora_np import ops
from lora_np import (GPT, GPTConfig, LoraConfig, add_lora, adapter_names_per_row, disable_lora, merge_lora, set_adapter,
                     to_numpy)
from lora_np.nn import Embedding, Linear, Module
from hf_oracle import max_rel_err
from peft_oracle import add_peft_adapter, ours_from_peft_files, peft_gpt2

NAMES = ["task_b", "__base__", "default", "task_b", "default"]


def _forward(model, idx, names=None, targets=None):
    with adapter_names_per_row(model, names):
        return model(idx, targets)


def _model_with_two_adapters(rng):
    model = GPT(GPTConfig(vocab_size=23, block_size=8, n_layer=2, n_head=2, n_embd=8), dtype=np.float64)
    add_lora(model, LoraConfig(r=2, target_modules=["c_attn", "c_fc"], use_dora=True))
    add_lora(model, LoraConfig(r=3, target_modules=["wte", "c_attn", "c_proj"]), adapter_name="task_b")
    for name, p in model.named_parameters():
        if ".lora_" in name:
            p.data = lora_np.backend.asarray(to_numpy(p) * rng.uniform(0.5, 1.5, p.shape)
                                             + 0.2 * rng.standard_normal(p.shape))
    return model


def test_each_row_equals_that_row_alone_with_its_adapter(rng):
    model = _model_with_two_adapters(rng)
    idx = rng.integers(0, 23, size=(len(NAMES), 8))
    mixed = to_numpy(_forward(model, idx, NAMES)[0])
    for i, name in enumerate(NAMES):
        if name == "__base__":
            with disable_lora(model):
                alone = to_numpy(model(idx[i:i + 1])[0])
        else:
            set_adapter(model, name)
            alone = to_numpy(model(idx[i:i + 1])[0])
        np.testing.assert_allclose(mixed[i:i + 1], alone, rtol=1e-12, atol=1e-13)
    assert lora_np.lora.active_adapter(model) == "default"


def test_gradients_of_a_mixed_batch_are_the_sums_over_rows(rng):
    """Training on a mixed batch: each adapter's gradient is the sum over the rows that used it."""
    model = _model_with_two_adapters(rng)
    for p in model.parameters():
        p.requires_grad = ".lora_" in [n for n, q in model.named_parameters() if q is p][0]
    idx = rng.integers(0, 23, size=(len(NAMES), 8))
    logits, _ = _forward(model, idx, NAMES)
    weights = rng.standard_normal(logits.shape)
    (logits * weights).sum().backward()
    mixed = {n: to_numpy(p.grad) for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    for i, name in enumerate(NAMES):
        if name != "__base__":
            set_adapter(model, name)
            for n, p in model.named_parameters():  # set_adapter froze the other adapter: train all LoRA params
                p.requires_grad = ".lora_" in n
            (model(idx[i:i + 1])[0] * weights[i:i + 1]).sum().backward()
    per_row = {n: to_numpy(p.grad) for n, p in model.named_parameters() if p.grad is not None}
    assert mixed.keys() == per_row.keys() and len(mixed) > 10
    for n in mixed:
        np.testing.assert_allclose(mixed[n], per_row[n], rtol=1e-10, atol=1e-12)


def test_mixed_batch_equals_peft_s_adapter_names(tmp_path, rng):
    """Plain LoRA adapters only: PEFT 0.21.2 refuses adapter_names with DoRA ("Cannot pass `adapter_names`
    when DoRA is enabled"); ours runs DoRA rows too (checked above against the single-adapter forward)."""
    peft = peft_gpt2(tmp_path, torch.float64, targets=("c_attn", "c_fc"))
    add_peft_adapter(peft, tmp_path, "task_b", seed=2, r=3, lora_alpha=5, target_modules=["c_attn", "c_proj", "wte"])
    ours = ours_from_peft_files(tmp_path, torch.float64, names=("default", "task_b"))
    idx = rng.integers(0, 61, size=(len(NAMES), 10))
    theirs = peft(torch.tensor(idx), adapter_names=NAMES).logits
    assert max_rel_err(to_numpy(_forward(ours, idx, NAMES)[0]), theirs) < 1e-9


def test_bad_adapter_names(rng):
    model = _model_with_two_adapters(rng)
    idx = rng.integers(0, 23, size=(2, 8))
    with pytest.raises(ValueError,
                       match=r"\['nope'\], which this model does not have; adapters: \['default', 'task_b'\]"):
        _forward(model, idx, ["default", "nope"])
    with pytest.raises(ValueError, match="3 entries for a batch of 2 rows"):
        _forward(model, idx, ["default"] * 3)
    with pytest.raises(TypeError, match="list of adapter names"):
        _forward(model, idx, "default")
    merge_lora(model)
    with pytest.raises(ValueError, match="unmerge_lora"):
        _forward(model, idx, ["default", "task_b"])


class _TinyModel(Module):
    """A model of its own (not GPT-2), with no LoRA code: an embedding and two Linear layers."""

    def __init__(self):
        super().__init__()
        self.wte = Embedding(11, 8, dtype=np.float64)
        self.up, self.down = Linear(8, 16, dtype=np.float64), Linear(16, 5, dtype=np.float64)

    def forward(self, idx):
        return self.down(ops.tanh(self.up(self.wte(idx))))


def test_any_model_gets_mixed_batches(rng):
    model = _TinyModel()
    add_lora(model, LoraConfig(r=2, target_modules=["up", "down"], init_lora_weights=False))
    add_lora(model, LoraConfig(r=3, target_modules=["wte", "up"], init_lora_weights=False), adapter_name="b")
    idx = rng.integers(0, 11, size=(4, 6))
    names = ["b", "default", "__base__", "b"]
    with adapter_names_per_row(model, names):
        mixed = to_numpy(model(idx))
    for i, name in enumerate(names):
        if name == "__base__":
            with disable_lora(model):
                alone = to_numpy(model(idx[i:i + 1]))
        else:
            set_adapter(model, name)
            alone = to_numpy(model(idx[i:i + 1]))
        np.testing.assert_allclose(mixed[i:i + 1], alone, rtol=1e-12, atol=1e-13)
    assert not np.allclose(mixed[0], mixed[1])  # the adapters do differ


def test_mixed_generation_keeps_each_row_on_its_adapter(rng):
    model = _model_with_two_adapters(rng)
    idx = rng.integers(0, 23, size=(2, 3))
    with adapter_names_per_row(model, ["task_b", "default"]):
        both = to_numpy(model.generate(idx, 4, temperature=0))
    for i, name in enumerate(["task_b", "default"]):
        set_adapter(model, name)
        np.testing.assert_array_equal(both[i:i + 1], to_numpy(model.generate(idx[i:i + 1], 4, temperature=0)))
