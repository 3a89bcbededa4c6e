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
import json
from pathlib import Path

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


GEMMA_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m.role == 'assistant' else "
                  "m.role }}\n{{ m.content }}<end_of_turn>\n{% endfor %}"
                  "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
SPECIAL = ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>")


def tiny_gemma_tokenizer(folder, texts, vocab_size=160):
    """A Gemma-style tokenizer.json trained by ``tokenizers`` on the words of ``texts``: a BPE with byte fallback
    (256 <0xNN> tokens after the special ones, as Gemma's), spaces as "▁", <bos> added, Gemma's
    special tokens and a short <start_of_turn> chat template; returns its vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Split(" ", "merged_with_previous")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    words = [" " + w for text in texts for w in text.split()]  # merges within words, as SentencePiece's
    tok.train_from_iterator(words, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL)))
    spec = json.loads(tok.to_str())
    shift = lambda i: i if i < len(SPECIAL) else i + 256  # noqa: E731
    vocab = {t: shift(i) for t, i in spec["model"]["vocab"].items()}
    vocab.update({f"<0x{b:02X}>": len(SPECIAL) + b for b in range(256)})
    spec["model"]["vocab"] = dict(sorted(vocab.items(), key=lambda kv: kv[1]))
    spec["post_processor"] = {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<bos>", "type_id": 0}},
                              {"Sequence": {"id": "A", "type_id": 0}}], "pair": [],
                              "special_tokens": {"<bos>": {"id": "<bos>", "ids": [2], "tokens": ["<bos>"]}}}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GemmaTokenizer", "bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>",
        "pad_token": "<pad>", "add_bos_token": True, "chat_template": GEMMA_TEMPLATE}), encoding="utf-8")
    return len(vocab)
