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


def assert_equals_transformers(ours, theirs, idx, targets, tol=1e-10, linear_suffix="_proj.weight"):
    """A model in float64 against transformers' (``theirs``, float64, its float32 upcasts patched by the
    caller's context): logits, the training loss (fused head), the eval loss and EVERY parameter
    gradient to ``tol`` relative; transformers' (out, in) Linear weights are transposed to ours."""
    import lora_np as ln
    ref_logits, ref_loss = hf_loss(theirs, idx, targets)
    ref_loss.backward()
    _, loss = ours.train()(idx, targets)
    loss.backward()
    with ln.no_grad():
        logits, eval_loss = ours(idx, targets)
    assert max_rel_err(ln.to_numpy(logits.data), ref_logits) < tol
    for ours_loss in (loss, eval_loss):
        assert abs(ours_loss.item() - ref_loss.item()) < tol * abs(ref_loss.item())
    their_params = dict(theirs.named_parameters())
    assert sorted(n for n, _ in ours.named_parameters()) == sorted(their_params)
    for name, p in ours.named_parameters():
        grad = their_params[name].grad.numpy()
        assert max_rel_err(ln.to_numpy(p.grad), grad.T if name.endswith(linear_suffix) else grad) < tol, name


def assert_nf4_base_equals_bnb_and_trains(model_class, path, idx):
    """``load_model(path, quantize="nf4")`` gives transformers + bitsandbytes' logits (float32), and LoRA
    on every projection of it lowers the loss in five AdamW steps."""
    import lora_np as ln
    ours = ln.load_model(path, quantize="nf4")
    assert ln.is_quantized(ours)
    with torch.no_grad():
        ref = bnb_nf4(model_class, path)(torch.tensor(idx)).logits.numpy()
    with ln.no_grad():
        assert np.abs(ln.to_numpy(ours(idx)[0].data) - ref).max() < 1e-4
    ln.add_lora(ours, ln.LoraConfig(r=4, target_modules="all-linear"))
    opt = ln.optim.AdamW([p for p in ours.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(5):
        _, loss = ours.train()(idx[:, :-1], idx[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
