"""Checks for notebook 04 (LoRA vs full fine-tuning): freezing the base, and AdamW's memory."""

import numpy as np

from lora_np import GPT, GPTConfig, LoraConfig, add_lora, count_parameters
from lora_np.optim import AdamW

from . import ExerciseFailed, exercise


def tiny_lora_model(dtype=np.float32):
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8), dtype=dtype)
    add_lora(model, LoraConfig(r=2, lora_alpha=4, target_modules=["c_attn", "c_fc"]))
    return model


@exercise
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


@exercise
def adamw_state_bytes(fn):
    answers = []
    for dtype in (np.float32, np.float64):          # a float64 model: 8 bytes per number, not 4
        model = tiny_lora_model(dtype)
        model.transformer.h[0].attn.c_attn.bias.requires_grad = True   # a trained bias: any trainable tensor counts
        mine = fn(model)
        trainable = [p for p in model.parameters() if p.requires_grad]
        opt = AdamW(trainable, lr=1e-3)
        for p in trainable:
            p.grad = np.ones_like(p.data)
        opt.step()
        if mine != opt.state_bytes():
            raise ExerciseFailed(f"for a {np.dtype(dtype).name} model you say {mine} bytes; AdamW holds "
                                 f"{opt.state_bytes()} after one step")
        answers.append(mine)
    return f"{answers[0]} bytes (float32) and {answers[1]} (float64), what AdamW allocates after its first step"
