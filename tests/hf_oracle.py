"""Hugging Face GPT-2 (and PEFT) reference models for the oracle tests."""

import numpy as np
import torch
import torch.nn.functional as F

TINY = dict(vocab_size=61, n_positions=16, n_embd=32, n_layer=2, n_head=4)


def tiny_hf_gpt2(path, dtype=torch.float64, seed=0, **overrides):
    """A random GPT2LMHeadModel (eval mode, no dropout) saved with save_pretrained into ``path``."""
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(seed)
    cfg = GPT2Config(**{**TINY, **overrides}, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(cfg).to(dtype).eval()
    model.save_pretrained(path)
    return model


def hf_loss(model, idx, targets):
    """Mean cross-entropy in the model's own dtype (HF's built-in loss upcasts to float32)."""
    logits = model(torch.tensor(idx)).logits
    return logits, F.cross_entropy(logits.reshape(-1, logits.shape[-1]), torch.tensor(targets).reshape(-1))


def max_rel_err(ours, theirs):
    theirs = theirs.detach().numpy() if hasattr(theirs, "detach") else np.asarray(theirs)
    return float(np.abs(np.asarray(ours) - theirs).max() / max(np.abs(theirs).max(), 1e-300))


def bnb_nf4(model_class, path):
    """``model_class`` (a transformers causal LM) from ``path`` through bitsandbytes: NF4 with double
    quantization and float32 compute. On a CPU with AVX512-BF16, bitsandbytes repacks the weights for
    inference and rounds the absmax to bfloat16; that path is switched off so the oracle computes in
    float32, as the config asks."""
    from transformers import BitsAndBytesConfig
    cfg = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                             bnb_4bit_compute_dtype=torch.float32)
    model = model_class.from_pretrained(path, quantization_config=cfg, device_map="cpu", dtype=torch.float32)
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
    return model.eval()
