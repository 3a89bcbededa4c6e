"""The Llama family's spec (spec.py): llama / qwen2 / qwen3 config.json <-> LlamaConfig, tensors, LoRA defaults.

    config.json         "model_type": "llama" | "qwen2" | "qwen3", sizes, RoPE (either spelling)
    model.safetensors   "model.layers.0.self_attn.q_proj.weight" (out, in): nn.Linear, transposed on load

RoPE settings come either the way transformers ≥ 5 writes them (``rope_parameters``: {"rope_type",
"rope_theta", ...}) or the way downloaded Llama 3.2 / Qwen2.5 folders have them (``rope_theta`` and
``rope_scaling``). Variants the decoder does not compute are refused with the field named.
"""


from .llama import MODEL_TYPES, Llama, LlamaConfig
from .spec import ModelFamily, Sizes, dtype_name

ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}
_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
           "max_position_embeddings")


def rope_settings(cfg, path):
    """(rope_theta, rope_scaling or None) from either spelling of the RoPE settings, with
    transformers' precedence (5.x, ``convert_rope_params_to_dict``; 4.x reads the top-level keys
    alone): a non-empty top-level ``rope_scaling`` wins over ``rope_parameters``, and rope_theta
    comes from the chosen object, else the top-level ``rope_theta``, else 10,000."""
    params, top = cfg.get("rope_parameters"), cfg.get("rope_scaling")
    for key, value in (("rope_parameters", params), ("rope_scaling", top)):
        if value is not None and not isinstance(value, dict):
            raise ValueError(f"{path}: {key} must be an object or null; got {value!r}")
    chosen = top or params or {}
    theta = chosen.get("rope_theta", cfg.get("rope_theta", 10000.0))
    scaling = {k: v for k, v in chosen.items() if k != "rope_theta"} or None
    if scaling and scaling.get("partial_rotary_factor", 1.0) != 1.0:
        raise ValueError(f"{path}: partial_rotary_factor={scaling['partial_rotary_factor']} is not supported "
                         f"(lora_np rotates the whole head)")
    return theta, scaling


def _refuse_unsupported(cfg, path):
    if cfg.get("hidden_act", "silu") != "silu":
        raise ValueError(f"{path}: hidden_act {cfg['hidden_act']!r} is not supported; "
                         f"the family's MLP is SwiGLU ('silu')")
    if cfg.get("use_sliding_window") or any(t != "full_attention" for t in cfg.get("layer_types") or ()):
        raise ValueError(f"{path}: sliding-window attention layers are not supported; lora_np attends over the "
                         f"whole context (set use_sliding_window to false)")
    if cfg.get("pretraining_tp", 1) not in (1, None):
        raise ValueError(f"{path}: pretraining_tp={cfg['pretraining_tp']} is not supported (1 only)")


def config_from_hf(cfg, path="config.json"):
    """A LlamaConfig from a llama / qwen2 / qwen3 config dict, refusing variants it does not compute."""
    missing = [k for k in _FIELDS if k not in cfg]
    if missing:
        raise ValueError(f"{path}: missing fields {missing} (a {cfg.get('model_type')} config needs {list(_FIELDS)})")
    _refuse_unsupported(cfg, path)
    kind = cfg["model_type"]
    theta, scaling = rope_settings(cfg, path)
    try:  # LlamaConfig's own checks (head counts, RoPE type) name the file they came from
        return _llama_config(cfg, kind, theta, scaling)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def _llama_config(cfg, kind, theta, scaling):
    bias = bool(cfg.get("attention_bias", False))
    known = set(_FIELDS) | {"num_key_value_heads", "head_dim", "rms_norm_eps", "rope_theta", "rope_scaling",
                            "rope_parameters", "attention_bias", "mlp_bias", "tie_word_embeddings",
                            "attention_dropout", "model_type", "architectures", "dtype", "torch_dtype"}
    return LlamaConfig(
        **{k: cfg[k] for k in _FIELDS},
        num_key_value_heads=cfg.get("num_key_value_heads") or cfg["num_attention_heads"],
        head_dim=cfg.get("head_dim"), rms_norm_eps=cfg.get("rms_norm_eps", 1e-6), rope_theta=theta,
        rope_scaling=scaling, qkv_bias=True if kind == "qwen2" else bias, o_bias=bias and kind != "qwen2",
        mlp_bias=bool(cfg.get("mlp_bias", False)), qk_norm=kind == "qwen3",
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", kind != "llama")),
        attention_dropout=float(cfg.get("attention_dropout", 0.0) or 0.0), model_type=kind,
        extra={k: v for k, v in cfg.items() if k not in known})


def check_expressible(config):
    """The switches must be what config.json's model_type implies, or from_pretrained would build
    another model: Llama has no q/k norms and one attention_bias for q, k, v and o; Qwen2 has
    q/k/v biases and none on o; Qwen3 has q/k norms and one attention_bias."""
    c, kind = config, config.model_type
    ok = {"llama": not c.qk_norm and c.qkv_bias == c.o_bias, "qwen2": c.qkv_bias and not c.o_bias and not c.qk_norm,
          "qwen3": c.qk_norm and c.qkv_bias == c.o_bias}.get(kind, False)
    if not ok:
        raise ValueError(f"save_model: model_type {kind!r} cannot express qkv_bias={c.qkv_bias}, o_bias={c.o_bias}, "
                         f"qk_norm={c.qk_norm} (llama: no q/k norms, one bias flag; qwen2: q/k/v biases only; "
                         f"qwen3: q/k norms, one bias flag)")


def config_to_hf(config, dtype):
    """config.json's fields for ``config``; a config its model_type cannot express is refused.

    Readable by transformers 4.x and 5.x alike: RoPE in both spellings (4.x reads the top-level
    ``rope_theta`` and ``rope_scaling`` and ignores ``rope_parameters``; 5.x reads ``rope_scaling``
    first when it is set: the same values), the dtype as ``torch_dtype`` (4.x) and ``dtype`` (5.x).
    The base's ``transformers_version`` (in ``config.extra``) is kept, as both forms are there for
    whichever version reads it. ``dtype``: a NumPy dtype or "bfloat16"."""
    check_expressible(config)
    c = config
    rope = {"rope_type": "default", "rope_theta": c.rope_theta} if c.rope_scaling is None else \
        {**c.rope_scaling, "rope_theta": c.rope_theta}
    out = {**c.extra, "model_type": c.model_type, "architectures": [ARCHITECTURES[c.model_type]],
           **{k: getattr(c, k) for k in _FIELDS}, "num_key_value_heads": c.num_key_value_heads,
           "head_dim": c.head_dim, "hidden_act": "silu", "rms_norm_eps": c.rms_norm_eps,
           "rope_theta": c.rope_theta, "rope_scaling": None if c.rope_scaling is None else dict(c.rope_scaling),
           "rope_parameters": rope, "tie_word_embeddings": c.tie_word_embeddings, "mlp_bias": c.mlp_bias,
           "attention_dropout": c.attention_dropout, "torch_dtype": dtype_name(dtype), "dtype": dtype_name(dtype)}
    if c.model_type != "qwen2":
        out["attention_bias"] = c.qkv_bias
    return out


def tensor_shapes(config):
    """Hugging Face tensor name -> shape (nn.Linear weights (out, in)) for ``config``, without building
    the model; an lm_head tied to embed_tokens is not a tensor of its own."""
    c = config
    qd, kvd, hid = c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim, c.hidden_size
    layer = {"input_layernorm.weight": (hid,), "post_attention_layernorm.weight": (hid,),
             "self_attn.q_proj.weight": (qd, hid), "self_attn.k_proj.weight": (kvd, hid),
             "self_attn.v_proj.weight": (kvd, hid), "self_attn.o_proj.weight": (hid, qd),
             "mlp.gate_proj.weight": (c.intermediate_size, hid), "mlp.up_proj.weight": (c.intermediate_size, hid),
             "mlp.down_proj.weight": (hid, c.intermediate_size)}
    if c.qkv_bias:
        layer.update({"self_attn.q_proj.bias": (qd,), "self_attn.k_proj.bias": (kvd,), "self_attn.v_proj.bias": (kvd,)})
    if c.o_bias:
        layer["self_attn.o_proj.bias"] = (hid,)
    if c.mlp_bias:
        layer.update({"mlp.gate_proj.bias": (c.intermediate_size,), "mlp.up_proj.bias": (c.intermediate_size,),
                      "mlp.down_proj.bias": (hid,)})
    if c.qk_norm:
        layer.update({"self_attn.q_norm.weight": (c.head_dim,), "self_attn.k_norm.weight": (c.head_dim,)})
    shapes = {"model.embed_tokens.weight": (c.vocab_size, hid), "model.norm.weight": (hid,)}
    shapes.update({f"model.layers.{i}.{n}": s for i in range(c.num_hidden_layers) for n, s in layer.items()})
    if not c.tie_word_embeddings:
        shapes["lm_head.weight"] = (c.vocab_size, hid)
    return shapes


def sizes(config):
    c = config
    return Sizes(c.vocab_size, c.max_position_embeddings, c.num_hidden_layers, c.hidden_size, c.num_attention_heads)


LLAMA = ModelFamily(
    name="llama", model_types=MODEL_TYPES, model_class=Llama, config_class=LlamaConfig,
    config_from_hf=config_from_hf, config_to_hf=config_to_hf, tensor_shapes=tensor_shapes, sizes=sizes,
    fan_in_fan_out=False, linear_weights=("_proj.weight",),
    lora_targets=("q_proj", "v_proj"),  # PEFT's default for Llama, Qwen2 and Qwen3
    gguf_architectures={kind: kind for kind in MODEL_TYPES})  # llama.cpp names them as transformers does
