"""Tiny Llama-family checkpoints written by transformers, and transformers computing in float64.

``tiny_hf_llama(path, "llama" | "qwen2" | "qwen3", ...)`` builds a model with random weights (every
parameter drawn, norms around 1, biases non-zero, so that each one moves the output) and
``save_pretrained``s it, optionally in bfloat16 or sharded. Test data, not library code.

``float64_transformers()``: transformers' RMSNorm upcasts to float32 and its rotary tables are
built in float32 whatever the model's dtype, so a float64 transformers model is only float32-exact.
Inside this context both compute in the input's dtype, the same formulas (RMSNorm: w ⊙ x/√(mean x² +
eps); rotary: θ = p·f with transformers' own float32 f), so that the oracle is exact to 1e-10.
"""

import contextlib

import torch

import tokenizer_folders

SIZES = dict(vocab_size=96, hidden_size=32, intermediate_size=56, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
KINDS = ("llama", "qwen2", "qwen3")


def hf_classes(kind):
    import transformers as T
    return {"llama": (T.LlamaConfig, T.LlamaForCausalLM), "qwen2": (T.Qwen2Config, T.Qwen2ForCausalLM),
            "qwen3": (T.Qwen3Config, T.Qwen3ForCausalLM)}[kind]


def tiny_hf_llama(path, kind="llama", dtype=torch.float32, max_shard_size=None, seed=0, **overrides):
    """Write a random ``kind`` model to ``path``; returns the transformers model (float32)."""
    config_class, model_class = hf_classes(kind)
    sizes = {**SIZES, **overrides}
    if kind == "qwen3":
        sizes.setdefault("head_dim", 12)
    torch.manual_seed(seed)
    model = model_class(config_class(**sizes))
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(1 + 0.2 * torch.randn_like(p) if "norm" in name else 0.15 * torch.randn_like(p))
    model.to(dtype).save_pretrained(path, **({"max_shard_size": max_shard_size} if max_shard_size else {}))
    return model.float()


def tiny_qwen3_folder(path, seed=0, **overrides):
    """A tiny random Qwen3 with Qwen's real tokenizer.json (vocabulary 151,936): a folder the CLI reads."""
    tokenizer_folders.write_folder(path, "qwen")
    tiny_hf_llama(path, "qwen3", vocab_size=151936, max_position_embeddings=64, bos_token_id=151643,
                  eos_token_id=151645, seed=seed, **overrides)
    return path


def _rms_norm_forward(self, hidden_states):
    variance = hidden_states.pow(2).mean(-1, keepdim=True)
    return self.weight * (hidden_states * torch.rsqrt(variance + self.variance_epsilon))


def _rotary_forward(self, x, position_ids):
    freqs = position_ids[..., None].to(x.dtype) * self.inv_freq.to(x.dtype)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos() * self.attention_scaling, emb.sin() * self.attention_scaling


@contextlib.contextmanager
def float64_transformers():
    from transformers.models.llama import modeling_llama
    from transformers.models.qwen2 import modeling_qwen2
    from transformers.models.qwen3 import modeling_qwen3
    patched = []
    for module, prefix in ((modeling_llama, "Llama"), (modeling_qwen2, "Qwen2"), (modeling_qwen3, "Qwen3")):
        for suffix, forward in (("RMSNorm", _rms_norm_forward), ("RotaryEmbedding", _rotary_forward)):
            cls = getattr(module, prefix + suffix)
            patched.append((cls, cls.forward))
            cls.forward = forward
    try:
        yield
    finally:
        for cls, forward in patched:
            cls.forward = forward


def load_hf(path, kind, dtype=torch.float64):
    """transformers' model for a folder, in ``dtype``, with SDPA attention (its float64 path stays float64)."""
    _, model_class = hf_classes(kind)
    return model_class.from_pretrained(path, dtype=dtype, attn_implementation="sdpa").eval()
