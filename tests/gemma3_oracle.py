"""Tiny Gemma 3 checkpoints written by transformers, and transformers' Gemma 3 computing in float64.

``tiny_hf_gemma3(path, ...)`` builds a random ``Gemma3ForCausalLM`` (every parameter drawn: the
(1 + w) norms' w around 0, so that each one moves the output) with local and global layers and a
sliding window shorter than the test sequences, and ``save_pretrained``s it. Test data, not library code.

``float64_gemma3()``: transformers' Gemma3RMSNorm computes in float32 (``x.float()``) and its rotary
tables are built in float32 whatever the model's dtype, so a float64 transformers model is only
float32-exact. Inside this context both compute in the input's dtype, the same formulas (RMSNorm:
x/√(mean x² + eps) ⊙ (1 + w); rotary: θ = p·f with transformers' own float32 f), so that the
oracle is exact to 1e-10. Attention runs SDPA (``load_hf``): its float64 path stays float64 (the
eager path's softmax would upcast to float32 only).
"""

import contextlib

import torch

SIZES = dict(vocab_size=96, hidden_size=32, intermediate_size=56, num_hidden_layers=3, num_attention_heads=4,
             num_key_value_heads=2, head_dim=12, max_position_embeddings=64, sliding_window=6,
             layer_types=["sliding_attention", "full_attention", "sliding_attention"], query_pre_attn_scalar=20,
             rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 10000.0},
                              "sliding_attention": {"rope_type": "default", "rope_theta": 100.0}})


def tiny_hf_gemma3(path, dtype=torch.float32, max_shard_size=None, seed=0, **overrides):
    """Write a random Gemma3ForCausalLM to ``path``; returns the transformers model (float32)."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig
    torch.manual_seed(seed)
    model = Gemma3ForCausalLM(Gemma3TextConfig(**{**SIZES, "bos_token_id": None, "eos_token_id": None,
                                                  "pad_token_id": None, **overrides}))
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(0.2 * torch.randn_like(p) if "norm" in name else 0.15 * torch.randn_like(p))
    model.to(dtype).save_pretrained(path, **({"max_shard_size": max_shard_size} if max_shard_size else {}))
    return model.float()


def _rms_norm_forward(self, x):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * (1.0 + self.weight)


def _rotary_forward(self, x, position_ids, layer_type):
    inv_freq = getattr(self, f"{layer_type}_inv_freq")
    freqs = position_ids[..., None].to(x.dtype) * inv_freq.to(x.dtype)
    emb = torch.cat((freqs, freqs), dim=-1)
    scaling = getattr(self, f"{layer_type}_attention_scaling")
    return emb.cos() * scaling, emb.sin() * scaling


@contextlib.contextmanager
def float64_gemma3():
    from transformers.models.gemma3 import modeling_gemma3 as m
    patched = [(m.Gemma3RMSNorm, m.Gemma3RMSNorm.forward), (m.Gemma3RotaryEmbedding, m.Gemma3RotaryEmbedding.forward)]
    m.Gemma3RMSNorm.forward, m.Gemma3RotaryEmbedding.forward = _rms_norm_forward, _rotary_forward
    try:
        yield
    finally:
        for cls, forward in patched:
            cls.forward = forward


def load_hf(path, dtype=torch.float64):
    """transformers' Gemma3ForCausalLM for a folder, in ``dtype``, with SDPA attention."""
    from transformers import Gemma3ForCausalLM
    return Gemma3ForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="sdpa").eval()
