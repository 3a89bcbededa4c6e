"""PEFT reference models for the LoRA-variant tests: the same weights in PEFT and in lora_np."""

import numpy as np
import torch

from hf_oracle import hf_loss, max_rel_err, tiny_hf_gpt2
from lora_np import load_adapter, load_gpt2, to_numpy

NP_DTYPE = {torch.float64: np.float64, torch.float32: np.float32}


def peft_gpt2(tmp_path, dtype=torch.float64, targets=("c_attn", "c_proj"), r=4, alpha=8, adapter="default",
              seed=1, **lora_kwargs):
    """HF GPT-2 saved in tmp/base, wrapped by PEFT with random non-zero adapter weights (DoRA magnitudes
    perturbed away from the weight norm too), saved in tmp/<adapter>. Returns the PEFT model (eval)."""
    from peft import LoraConfig, get_peft_model
    hf = tiny_hf_gpt2(tmp_path / "base", dtype=dtype)
    torch.manual_seed(seed)
    cfg = LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), fan_in_fan_out=True,
                     init_lora_weights=lora_kwargs.pop("init_lora_weights", False), **lora_kwargs)
    peft = get_peft_model(hf, cfg, adapter_name=adapter).eval()
    perturb_magnitudes(peft, seed)
    peft.save_pretrained(tmp_path / "adapters", selected_adapters=[adapter])
    return peft


def perturb_magnitudes(peft, seed):
    """m ← m ⊙ U(0.5, 1.5): a DoRA whose magnitude is not the weight norm (else it starts as plain LoRA)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_magnitude_vector" in name:
                p.mul_(0.5 + torch.rand(p.shape, generator=gen, dtype=p.dtype))


def add_peft_adapter(peft, tmp_path, name, seed, **lora_kwargs):
    """A second random adapter ``name`` on the PEFT model, saved in tmp/adapters/<name>."""
    from peft import LoraConfig
    torch.manual_seed(seed)
    cfg = LoraConfig(fan_in_fan_out=True, init_lora_weights=False, **lora_kwargs)
    peft.add_adapter(name, cfg)
    perturb_magnitudes(peft, seed)
    peft.save_pretrained(tmp_path / "adapters", selected_adapters=[name])


def adapter_dir(tmp_path, name):
    """Where PEFT's save_pretrained put adapter ``name`` (the default one at the top, others in subfolders)."""
    return tmp_path / "adapters" if name == "default" else tmp_path / "adapters" / name


def ours_from_peft_files(tmp_path, dtype, names=("default",)):
    """lora_np's GPT-2 from tmp/base with the PEFT adapter files loaded under the same names."""
    model = load_gpt2(tmp_path / "base", dtype=NP_DTYPE[dtype])
    for name in names:
        load_adapter(model, adapter_dir(tmp_path, name), adapter_name=name)
    return model


def peft_grads(peft):
    """PEFT's parameter name -> grad, under lora_np's names (no base_model.model. prefix, no .base_layer)."""
    return {n.removeprefix("base_model.model.").replace(".base_layer", ""): p.grad
            for n, p in peft.named_parameters() if p.grad is not None}


def logit_and_grad_errors(ours, peft, idx):
    """Max relative errors of lora_np against PEFT on next-token prediction over ``idx``: the logits,
    and {parameter name: error} for the gradient of the mean cross-entropy of every trainable parameter."""
    logits, _ = ours(idx[:, :-1])
    _, loss = ours(idx[:, :-1], idx[:, 1:])   # training: the fused LM head, no logits
    ref_logits, ref_loss = hf_loss(peft, idx[:, :-1], idx[:, 1:])
    loss.backward()
    ref_loss.backward()
    ref = peft_grads(peft)
    grads = {n: max_rel_err(to_numpy(p.grad), ref[n]) for n, p in ours.named_parameters() if p.requires_grad}
    return max_rel_err(to_numpy(logits), ref_logits), grads


def assert_merged_folder_is_peft(model_class, base_dir, adapter, merged, ids):
    """The oracle of the CLI's merge: transformers reads the ``merged`` folder and gives the logits of
    PEFT applying ``adapter`` to the base in ``base_dir``, on the token ids ``ids``; and the adapter
    moved the logits (a merge of a zero adapter would pass trivially)."""
    from peft import PeftModel
    base = model_class.from_pretrained(base_dir).eval()
    with torch.no_grad():
        base_logits = base(ids).logits
        expected = PeftModel.from_pretrained(base, adapter).eval()(ids).logits
        got = model_class.from_pretrained(merged).eval()(ids).logits
    assert (expected - base_logits).abs().max() > 1e-4  # the adapter learned something
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
