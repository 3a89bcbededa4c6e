"""How llama.cpp names what Hugging Face names: tensors, config keys, and its q/k row order.

    token_embd.weight              model.embed_tokens.weight
    blk.N.attn_q.weight            model.layers.N.self_attn.q_proj.weight     (also .bias)
    blk.N.attn_norm.weight         model.layers.N.input_layernorm.weight
    output_norm.weight / output    model.norm.weight / lm_head.weight (absent: tied to the embedding)

Config values are ``{arch}.*`` metadata (``llama.embedding_length`` = hidden_size ...), as
transformers' GGUF loader maps them (integrations/ggml.py); the vocabulary size is the length of
``tokenizer.ggml.tokens`` when ``{arch}.vocab_size`` is missing.

llama.cpp's converter (convert_hf_to_gguf.py, ``LlamaModel.permute``) reorders the rows of a
*llama*-architecture q_proj and k_proj: within each head of d rows, the halves that RoPE pairs
(i, i + d/2) become interleaved pairs (2i, 2i + 1), because ggml's RoPE rotates adjacent values.
Per head: ``rows.reshape(2, d/2).T`` is the permutation and ``rows.reshape(d/2, 2).T`` undoes it.
Qwen2/Qwen3 files are written without it (their converter does not permute). The permutation
moves whole rows, so it applies to quantized rows (bytes) as well as to float ones.

Gemma 3 ("gemma3", Hugging Face's "gemma3_text") differs in three ways: its four norms per layer
are named attn_norm, post_attention_norm, ffn_norm (= pre_feedforward_layernorm, not Llama's
post_attention_layernorm) and post_ffw_norm; llama.cpp stores every norm weight as 1 + w (its
RMSNorm multiplies by the weight, Gemma's by 1 + w: ``NORM_OFFSET``), which the reader subtracts
as transformers' GGUF loader does; and the sliding window is ``gemma3.attention.sliding_window``.
The 5:1 layer pattern and the local RoPE base 10,000 are not in the file: llama.cpp fixes them
(``set_swa_pattern(6)``, ``rope_freq_base_train_swa = 10000``), as transformers' defaults do. Nor is
query_pre_attn_scalar: llama.cpp scales scores by 1/√key_length (its 27B type apart), transformers'
loader takes its default 256; the two agree for the released 270M, 1B and 4B (head_dim 256).
``gemma3.final_logit_softcapping`` is written by the converter where a config sets it (transformers'
loader ignores it; llama.cpp and lora_np read it).
"""

import re

ARCHITECTURES = ("llama", "qwen2", "qwen3", "gemma3")  # general.architecture
MODEL_TYPES = {"gemma3": "gemma3_text"}  # HF's model_type where it is not the architecture's word
PERMUTED_QK = ("llama",)
NORM_OFFSET = {"gemma3": 1.0}  # stored norm weight = HF's + offset

# {arch}.<key> -> HF config key
CONFIG_KEYS = {"context_length": "max_position_embeddings", "embedding_length": "hidden_size",
               "block_count": "num_hidden_layers", "feed_forward_length": "intermediate_size",
               "attention.head_count": "num_attention_heads", "attention.head_count_kv": "num_key_value_heads",
               "attention.layer_norm_rms_epsilon": "rms_norm_eps", "rope.freq_base": "rope_theta",
               "attention.key_length": "head_dim", "vocab_size": "vocab_size"}
ARCH_CONFIG_KEYS = {"gemma3": {"attention.sliding_window": "sliding_window",  # beside CONFIG_KEYS
                               "final_logit_softcapping": "final_logit_softcapping"}}

LAYER_TENSORS = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
                 "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
                 "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm",
                 "attn_k_norm": "self_attn.k_norm", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                 "ffn_down": "mlp.down_proj"}
GLOBAL_TENSORS = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
ARCH_LAYER_TENSORS = {"gemma3": {**LAYER_TENSORS, "post_attention_norm": "post_attention_layernorm",
                                 "ffn_norm": "pre_feedforward_layernorm",
                                 "post_ffw_norm": "post_feedforward_layernorm"}}

_GGUF_LAYER = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)$")
_HF_LAYER = re.compile(r"model\.layers\.(\d+)\.([\w.]+)\.(weight|bias)$")
_HF_OF_GLOBAL = {v: k for k, v in GLOBAL_TENSORS.items()}


def hf_name(name, arch="llama"):
    """The Hugging Face name of llama.cpp tensor ``name`` in a file of architecture ``arch``, or None
    if it has none here."""
    m = _GGUF_LAYER.match(name)
    if m:
        part = ARCH_LAYER_TENSORS.get(arch, LAYER_TENSORS).get(m.group(2))
        return None if part is None else f"model.layers.{m.group(1)}.{part}.{m.group(3)}"
    base, _, kind = name.rpartition(".")
    return f"{GLOBAL_TENSORS[base]}.{kind}" if base in GLOBAL_TENSORS and kind in ("weight", "bias") else None


def gguf_name(name, arch="llama"):
    """llama.cpp's name of Hugging Face tensor ``name`` in a file of architecture ``arch`` (the inverse
    of ``hf_name``)."""
    m = _HF_LAYER.match(name)
    of_layer = {v: k for k, v in ARCH_LAYER_TENSORS.get(arch, LAYER_TENSORS).items()}
    if m and m.group(2) in of_layer:
        return f"blk.{m.group(1)}.{of_layer[m.group(2)]}.{m.group(3)}"
    base, _, kind = name.rpartition(".")
    if base in _HF_OF_GLOBAL:
        return f"{_HF_OF_GLOBAL[base]}.{kind}"
    raise ValueError(f"no llama.cpp name for tensor {name!r}")


def qk_heads(hf, config):
    """The head count whose rows llama.cpp permutes in tensor ``hf`` (None: not a q/k projection)."""
    if ".self_attn.q_proj." in hf:
        return config.get("num_attention_heads")
    if ".self_attn.k_proj." in hf:
        return config.get("num_key_value_heads", config.get("num_attention_heads"))
    return None


def permute_rows(rows, n_head):
    """HF row order -> llama.cpp's: each head's halves interleaved (``LlamaModel.permute``)."""
    return rows.reshape(n_head, 2, rows.shape[0] // n_head // 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def unpermute_rows(rows, n_head):
    """llama.cpp's row order -> HF's (the inverse of ``permute_rows``; transformers' reverse permute)."""
    return rows.reshape(n_head, rows.shape[0] // n_head // 2, 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)
