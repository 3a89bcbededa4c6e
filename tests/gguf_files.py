"""Tiny GGUF files for tests, written the way llama.cpp's convert_hf_to_gguf.py writes them.

``write_tiny_gguf(path, hf_model, "Q4_1")`` takes a transformers model (``llama_oracle.tiny_hf_llama``)
and writes its weights with ``gguf.GGUFWriter``: llama.cpp tensor names, q/k rows of a llama model
permuted (llama.cpp's ``LlamaModel.permute``, spelled out here rather than taken from lora_np), a
Gemma 3 model's norms under its names and stored as 1 + w (``Gemma3Model``),
matrices in the given type (``gguf.quants.quantize``), 1-D tensors in F32, and a small vocabulary.
Test data, not library code: the reader under test and transformers' GGUF loader (the oracle) both
read these files.
"""

from pathlib import Path

import numpy as np

NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
         "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
         "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
         "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
GLOBAL = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}
# Gemma 3 (llama.cpp's Gemma3Model): four norms per layer under these names, each stored as 1 + w
GEMMA3_NAMES = {**NAMES, "post_attention_layernorm": "post_attention_norm", "pre_feedforward_layernorm": "ffn_norm",
                "post_feedforward_layernorm": "post_ffw_norm"}
ARCH = {"gemma3_text": "gemma3"}


def llama_cpp_name(hf, arch="llama"):
    base, kind = hf.rsplit(".", 1)
    if base in GLOBAL:
        return f"{GLOBAL[base]}.{kind}"
    _, _, layer, part = base.split(".", 3)
    return f"blk.{layer}.{(GEMMA3_NAMES if arch == 'gemma3' else NAMES)[part]}.{kind}"


def _add_gemma3_fields(w, c):
    w.add_uint32("gemma3.attention.sliding_window", c.sliding_window)


def llama_cpp_permute(w, n_head):
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_gguf(path, hf_model, type_name="F32", extra_fields=None, drop=()):
    """``hf_model``'s weights as a GGUF file of matrices in ``type_name``; returns ``path``."""
    import gguf
    c = hf_model.config
    arch = ARCH.get(c.model_type, c.model_type)
    w = gguf.GGUFWriter(str(path), arch)
    for key, value in {"context_length": c.max_position_embeddings, "embedding_length": c.hidden_size,
                       "block_count": c.num_hidden_layers, "feed_forward_length": c.intermediate_size,
                       "attention.head_count": c.num_attention_heads,
                       "attention.head_count_kv": c.num_key_value_heads,
                       "attention.key_length": c.head_dim, "rope.dimension_count": c.head_dim}.items():
        w.add_uint32(f"{arch}.{key}", value)
    w.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", c.rms_norm_eps)
    rope = c.rope_parameters.get("full_attention", c.rope_parameters)
    w.add_float32(f"{arch}.rope.freq_base", rope["rope_theta"])
    if arch == "gemma3":
        _add_gemma3_fields(w, c)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"t{i}" for i in range(c.vocab_size)])
    for key, value in (extra_fields or {}).items():
        w.add_string(key, value)
    qtype = gguf.GGMLQuantizationType[type_name]
    for name, p in hf_model.state_dict().items():
        if name in drop or (name == "lm_head.weight" and c.tie_word_embeddings):
            continue
        t = p.detach().float().numpy() + (1.0 if arch == "gemma3" and name.endswith("norm.weight") else 0.0)
        if arch == "llama" and (".q_proj.weight" in name or ".k_proj.weight" in name):
            t = llama_cpp_permute(t, c.num_attention_heads if ".q_proj" in name else c.num_key_value_heads)
        if t.ndim == 2 and type_name not in ("F32", "F16"):
            w.add_tensor(llama_cpp_name(name, arch), gguf.quants.quantize(t, qtype), raw_dtype=qtype)
        else:
            wide = np.float16 if type_name == "F16" and t.ndim == 2 else np.float32
            w.add_tensor(llama_cpp_name(name, arch), t.astype(wide))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(path)
