"""Checks for notebook 04 (LoRA vs full fine-tuning): freezing the base, and AdamW's memory."""

import functools

import numpy as np

from lora_np import GPT, GPTConfig, LoraConfig, add_lora, count_parameters
from lora_np.optim import AdamW

from . import ExerciseFailed, exercise


def tiny_lora_model():
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8))
    add_lora(model, LoraConfig(r=2, lora_alpha=4, target_modules=["c_attn", "c_fc"]))
    return model


def _freeze_everything(solution):
    @functools.wraps(solution)
    def wrong(model):
        solution(model)
        for p in model.parameters():
            p.requires_grad = False
    return wrong


@exercise(mutate=_freeze_everything)
def mark_only_lora_as_trainable(fn):
    engine = {name for name, p in tiny_lora_model().named_parameters() if p.requires_grad}
    model = tiny_lora_model()
    for p in model.parameters():
        p.requires_grad = True                      # someone forgot to freeze
    fn(model)
    mine = {name for name, p in model.named_parameters() if p.requires_grad}
    if mine != engine:
        raise ExerciseFailed(f"trainable after your function: {len(mine)} tensors; add_lora leaves {len(engine)}. "
                             f"Wrongly trainable: {sorted(mine - engine)[:3]}; wrongly frozen: {sorted(engine - mine)[:3]}")
    layers = [(8, 24), (8, 32)] * 2                 # (d_in, d_out) of c_attn and c_fc, two layers
    closed_form = sum(2 * (d_in + d_out) for d_in, d_out in layers)
    if count_parameters(model)[0] != closed_form:
        raise ExerciseFailed(f"{count_parameters(model)[0]} trainable numbers; r·(d_in + d_out) summed gives {closed_form}")
    return f"the same {len(mine)} tensors as add_lora, {closed_form} numbers = Σ r·(d_in + d_out)"


def _one_moment(solution):
    @functools.wraps(solution)
    def wrong(model):
        return solution(model) // 2
    return wrong


@exercise(mutate=_one_moment)
def adamw_state_bytes(fn):
    model = tiny_lora_model()
    mine = fn(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = AdamW(trainable, lr=1e-3)
    for p in trainable:
        p.grad = np.ones_like(p.data)
    opt.step()
    if mine != opt.state_bytes():
        raise ExerciseFailed(f"you say {mine} bytes; AdamW holds {opt.state_bytes()} after one step")
    return f"{mine} bytes, what AdamW allocates after its first step"
