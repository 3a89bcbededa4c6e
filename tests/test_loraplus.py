"""LoRA+ parameter groups: B-side parameters at ratio·lr, compared with PEFT's create_loraplus_optimizer."""

import numpy as np
import pytest
import torch

from lora_np import GPT, GPTConfig, LoraConfig, add_lora, load_gpt2
from lora_np.optim import AdamW, loraplus_param_groups
from peft_oracle import peft_gpt2


def _lr_by_name(model, groups):
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    return {n: lr_of[id(p)] for n, p in model.named_parameters() if id(p) in lr_of}


def test_groups_equal_peft_s_for_linear_layers_with_dora(tmp_path):
    from peft.optimizers import create_loraplus_optimizer
    peft = peft_gpt2(tmp_path, torch.float32, targets=("c_attn", "c_fc"), use_dora=True)
    theirs = create_loraplus_optimizer(peft, torch.optim.AdamW, lr=2e-3, loraplus_lr_ratio=16.0)
    their_lr = {}
    names = {id(p): n.removeprefix("base_model.model.").replace(".base_layer", "") for n, p in peft.named_parameters()}
    for g in theirs.param_groups:
        for p in g["params"]:
            their_lr[names[id(p)]] = g["lr"]
    ours = add_lora(load_gpt2(tmp_path / "base"), LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "c_fc"],
                                                              use_dora=True))
    ours_lr = _lr_by_name(ours, loraplus_param_groups(ours, lr=2e-3, ratio=16.0))
    assert ours_lr == pytest.approx(their_lr) and len(ours_lr) == 2 * 2 * 3
    assert sorted(set(ours_lr.values())) == pytest.approx([2e-3, 32e-3])


def test_embedding_b_takes_the_fast_rate_and_training_runs():
    model = GPT(GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=8))
    add_lora(model, LoraConfig(r=2, target_modules=["wte", "c_attn"]))
    lrs = _lr_by_name(model, loraplus_param_groups(model, lr=1e-3, ratio=4, weight_decay=0.1))
    assert lrs == {"transformer.wte.lora_embedding_A.default": 1e-3, "transformer.wte.lora_embedding_B.default": 4e-3,
                   "transformer.h.0.attn.c_attn.lora_A.default.weight": 1e-3,
                   "transformer.h.0.attn.c_attn.lora_B.default.weight": 4e-3}
    opt = AdamW(loraplus_param_groups(model, lr=1e-2))
    idx = np.random.default_rng(0).integers(0, 20, size=(4, 8))
    first = model(idx[:, :-1], idx[:, 1:])[1]
    for _ in range(10):
        opt.zero_grad()
        loss = model(idx[:, :-1], idx[:, 1:])[1]
        loss.backward()
        opt.step()
    assert loss.item() < first.item()


def test_bad_input():
    model = add_lora(GPT(GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=8)), LoraConfig(r=2))
    with pytest.raises(ValueError, match="ratio must be a positive number; got 0"):
        loraplus_param_groups(model, lr=1e-3, ratio=0)
    with pytest.raises(TypeError, match=r"\(name, Parameter\) pairs"):
        loraplus_param_groups(model.parameters(), lr=1e-3)
    with pytest.raises(ValueError, match="no trainable parameter"):
        loraplus_param_groups(GPT(GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=8))
                              .requires_grad_(False), lr=1e-3)
