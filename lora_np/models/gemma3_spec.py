"""Gemma 3's spec (spec.py): gemma3_text config.json <-> Gemma3Config, tensors, LoRA defaults.

    config.json         "model_type": "gemma3_text", sizes, layer_types, sliding_window, both RoPE bases
    model.safetensors   Llama's tensor names, q_norm/k_norm in every layer, and two more norms per
                        layer (pre_feedforward_layernorm, post_feedforward_layernorm); nn.Linear (out, in)

RoPE settings come either the way transformers ≥ 5 writes them (``rope_parameters``:
{"full_attention": {...}, "sliding_attention": {...}}) or the older way (``rope_theta``,
``rope_local_base_freq``, ``rope_scaling`` for the global layers); layer types either as
``layer_types`` or as ``sliding_window_pattern``. Every refusal is one line naming config.json.
The multimodal "gemma3" folders (Gemma3ForConditionalGeneration, a vision tower and a
text_config) are not read: their model_type is not one lora_np knows.
"""

from .gemma3 import FULL, MODEL_TYPE, SLIDING, Gemma3, Gemma3Config, pattern_layer_types
from .llama_spec import sizes
from .llama_spec import tensor_shapes as llama_tensor_shapes
from .spec import ModelFamily, dtype_name

_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
           "max_position_embeddings")
_DEFAULTS = dict(num_key_value_heads=None, head_dim=256, rms_norm_eps=1e-6, query_pre_attn_scalar=256,
                 sliding_window=4096, final_logit_softcapping=None)  # transformers' Gemma3TextConfig
_KNOWN = set(_FIELDS) | set(_DEFAULTS) | {
    "model_type", "architectures", "dtype", "torch_dtype", "rope_parameters", "rope_theta", "rope_scaling",
    "rope_local_base_freq", "layer_types", "sliding_window_pattern", "_sliding_window_pattern", "attention_bias",
    "attention_dropout", "tie_word_embeddings", "hidden_activation", "hidden_act", "attn_logit_softcapping",
    "use_bidirectional_attention"}


def rope_settings(cfg):
    """(global theta, local theta, global scaling or None) from either spelling, with transformers 5's
    precedence (``convert_rope_params_to_dict``): a top-level rope_scaling updates the global layers'
    rope_parameters; thetas come from rope_parameters, else the top-level keys, else the defaults."""
    params, top = cfg.get("rope_parameters") or {}, cfg.get("rope_scaling") or {}
    for key, value in (("rope_parameters", params), ("rope_scaling", top)):
        if not isinstance(value, dict):
            raise ValueError(f"{key} must be an object or null; got {value!r}")
    full, local = dict(params.get(FULL) or {}), dict(params.get(SLIDING) or {})
    full.update(top)
    theta = full.pop("rope_theta", cfg.get("rope_theta", 1000000.0))
    local_theta = local.pop("rope_theta", cfg.get("rope_local_base_freq", 10000.0))
    if local.get("rope_type", "default") != "default":
        raise ValueError(f"local layers' rope_type {local['rope_type']!r} is not supported (only 'default')")
    return theta, local_theta, full or None


def _refuse_unsupported(cfg):
    act = cfg.get("hidden_activation", cfg.get("hidden_act", "gelu_pytorch_tanh"))
    if act not in ("gelu_pytorch_tanh", "gelu_new"):
        raise ValueError(f"hidden_activation {act!r} is not supported; Gemma 3's MLP is GeGLU with the tanh "
                         f"GELU ('gelu_pytorch_tanh')")
    if cfg.get("attn_logit_softcapping") is not None:
        raise ValueError(f"attn_logit_softcapping={cfg['attn_logit_softcapping']} is not supported (Gemma 3 "
                         f"sets it null; lora_np's attention does not soft-cap its scores)")
    if cfg.get("use_bidirectional_attention"):
        raise ValueError("use_bidirectional_attention=true is not supported (lora_np's decoders are causal)")


def _build(cfg):
    _refuse_unsupported(cfg)
    theta, local_theta, scaling = rope_settings(cfg)
    get = {k: cfg.get(k, v) for k, v in _DEFAULTS.items()}
    layer_types = cfg.get("layer_types")
    if layer_types is None:
        pattern = cfg.get("sliding_window_pattern", cfg.get("_sliding_window_pattern", 6))
        layer_types = pattern_layer_types(cfg["num_hidden_layers"], pattern)
    bias = bool(cfg.get("attention_bias", False))
    return Gemma3Config(
        **{k: cfg[k] for k in _FIELDS}, **{k: v for k, v in get.items() if k != "num_key_value_heads"},
        num_key_value_heads=get["num_key_value_heads"] or cfg["num_attention_heads"], rope_theta=theta,
        rope_local_base_freq=local_theta, rope_scaling=scaling, layer_types=layer_types, qkv_bias=bias,
        o_bias=bias, tie_word_embeddings=bool(cfg.get("tie_word_embeddings", True)),
        attention_dropout=float(cfg.get("attention_dropout", 0.0) or 0.0),
        extra={k: v for k, v in cfg.items() if k not in _KNOWN})


def config_from_hf(cfg, path="config.json"):
    """A Gemma3Config from a gemma3_text config dict; anything it cannot compute is one line naming ``path``."""
    missing = [k for k in _FIELDS if k not in cfg]
    if missing:
        raise ValueError(f"{path}: missing fields {missing} (a gemma3_text config needs {list(_FIELDS)})")
    try:
        return _build(cfg)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: {e}") from None


def config_to_hf(config, dtype):
    """config.json's fields for ``config``, readable by transformers 4.x and 5.x alike (as llama_spec's):
    RoPE as 5.x writes it (rope_parameters per layer type) and as 4.x reads it (rope_theta,
    rope_local_base_freq, rope_scaling), the dtype as ``torch_dtype`` and ``dtype``."""
    c = config
    full = {"rope_type": "default", "rope_theta": c.rope_theta} if c.rope_scaling is None else \
        {**c.rope_scaling, "rope_theta": c.rope_theta}
    return {**c.extra, "model_type": MODEL_TYPE, "architectures": ["Gemma3ForCausalLM"],
            "rope_theta": c.rope_theta, "rope_local_base_freq": c.rope_local_base_freq,
            "rope_scaling": None if c.rope_scaling is None else dict(c.rope_scaling),
            **{k: getattr(c, k) for k in _FIELDS}, "num_key_value_heads": c.num_key_value_heads,
            "head_dim": c.head_dim, "hidden_activation": "gelu_pytorch_tanh", "rms_norm_eps": c.rms_norm_eps,
            "rope_parameters": {FULL: full, SLIDING: {"rope_type": "default", "rope_theta": c.rope_local_base_freq}},
            "layer_types": list(c.layer_types), "sliding_window": c.sliding_window,
            "query_pre_attn_scalar": c.query_pre_attn_scalar, "final_logit_softcapping": c.final_logit_softcapping,
            "attn_logit_softcapping": None, "use_bidirectional_attention": False, "attention_bias": c.qkv_bias,
            "attention_dropout": c.attention_dropout, "tie_word_embeddings": c.tie_word_embeddings,
            "torch_dtype": dtype_name(dtype), "dtype": dtype_name(dtype)}


def tensor_shapes(config):
    """Llama's tensors (q_norm/k_norm included: qk_norm is always on) and two more norms per layer."""
    shapes = llama_tensor_shapes(config)
    for i in range(config.num_hidden_layers):
        for name in ("pre_feedforward_layernorm", "post_feedforward_layernorm"):
            shapes[f"model.layers.{i}.{name}.weight"] = (config.hidden_size,)
    return shapes


GEMMA3 = ModelFamily(
    name="gemma3", model_types=(MODEL_TYPE,), model_class=Gemma3, config_class=Gemma3Config,
    config_from_hf=config_from_hf, config_to_hf=config_to_hf, tensor_shapes=tensor_shapes, sizes=sizes,
    fan_in_fan_out=False, linear_weights=("_proj.weight",),
    lora_targets=("q_proj", "v_proj"),  # PEFT's default for gemma3_text
    gguf_architectures={MODEL_TYPE: "gemma3"})
