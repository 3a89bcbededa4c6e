"""Hugging Face model folders of any supported family: ``load_model(path)`` and ``save_model(model, path)``.

    <dir>/config.json                      "model_type": "gpt2" | "llama" | "qwen2" | "qwen3", sizes, RoPE
    <dir>/model.safetensors                one file, or
    <dir>/model.safetensors.index.json     {"weight_map": {tensor name: shard file}} and the shards

GPT-2 folders go to ``load_gpt2``; the others build a ``Llama`` (llama.py), the one decoder of the
family, from the config's switches. RoPE settings come either the way transformers ≥ 5 writes them
(``rope_parameters``: {"rope_type", "rope_theta", ...}) or the way downloaded Llama 3.2 / Qwen2.5
folders have them (``rope_theta`` and ``rope_scaling``). Everything is checked before the model
is built: the config's sizes against every tensor's name and shape in the file headers, each shard
against the index. Tensors are then read one at a time (bfloat16 and float16 widened to float32 on
the way, ``io/safetensors_file.py``), and each (out, in) ``nn.Linear`` weight is transposed into
lora_np's (in, out) layout. With ``quantize``, each Linear weight is quantized as soon as it is
read (``io/quantized_load.py``): the float32 model is never built. Pickle files are never opened.
"""

import dataclasses
from pathlib import Path

import numpy as np

from .. import backend
from .atomic import atomic_write_json, read_json
from .gpt2_checkpoint import CONFIG_FILE, WEIGHTS_FILE, load_gpt2, model_dtype, save_gpt2
from .safetensors_file import open_safetensors, write_safetensors
from ..llama import MODEL_TYPES as LLAMA_TYPES
from ..llama import Llama, LlamaConfig, LlamaDecoderLayer
from ..model import GPT
from ..nn import ModuleList
from ..quant.weight import QuantWeight, check_scheme
from .quantized_load import check_block_sizes, fill_quantized

INDEX_FILE = "model.safetensors.index.json"
MODEL_TYPES = ("gpt2",) + LLAMA_TYPES
ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}
_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
           "max_position_embeddings")


def rope_settings(cfg, path):
    """(rope_theta, rope_scaling or None) from either spelling of the RoPE settings."""
    params = cfg.get("rope_parameters")
    if isinstance(params, dict) and params:
        theta = params.get("rope_theta", cfg.get("rope_theta", 10000.0))
        scaling = {k: v for k, v in params.items() if k != "rope_theta"}
    else:
        theta, scaling = cfg.get("rope_theta", 10000.0), cfg.get("rope_scaling")
    if scaling is not None and not isinstance(scaling, dict):
        raise ValueError(f"{path}: rope_scaling must be an object or null; got {scaling!r}")
    if scaling and scaling.get("partial_rotary_factor", 1.0) != 1.0:
        raise ValueError(f"{path}: partial_rotary_factor={scaling['partial_rotary_factor']} is not supported "
                         f"(lora_np rotates the whole head)")
    return theta, scaling


def _refuse_unsupported(cfg, path):
    if cfg.get("hidden_act", "silu") != "silu":
        raise ValueError(f"{path}: hidden_act {cfg['hidden_act']!r} is not supported; the family's MLP is SwiGLU ('silu')")
    if cfg.get("use_sliding_window") or any(t != "full_attention" for t in cfg.get("layer_types") or ()):
        raise ValueError(f"{path}: sliding-window attention layers are not supported; lora_np attends over the "
                         f"whole context (set use_sliding_window to false)")
    if cfg.get("pretraining_tp", 1) not in (1, None):
        raise ValueError(f"{path}: pretraining_tp={cfg['pretraining_tp']} is not supported (1 only)")


def llama_config_from_hf(cfg, path=CONFIG_FILE):
    """A LlamaConfig from a llama / qwen2 / qwen3 config dict, refusing variants it does not compute."""
    missing = [k for k in _FIELDS if k not in cfg]
    if missing:
        raise ValueError(f"{path}: missing fields {missing} (a {cfg.get('model_type')} config needs {list(_FIELDS)})")
    _refuse_unsupported(cfg, path)
    kind = cfg["model_type"]
    theta, scaling = rope_settings(cfg, path)
    bias = bool(cfg.get("attention_bias", False))
    known = set(_FIELDS) | {"num_key_value_heads", "head_dim", "rms_norm_eps", "rope_theta", "rope_scaling",
                            "rope_parameters", "attention_bias", "mlp_bias", "tie_word_embeddings",
                            "attention_dropout", "model_type", "architectures", "dtype", "torch_dtype"}
    return LlamaConfig(
        **{k: cfg[k] for k in _FIELDS}, num_key_value_heads=cfg.get("num_key_value_heads") or cfg["num_attention_heads"],
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


def llama_config_to_hf(config, dtype):
    c = config
    rope = {"rope_type": "default", "rope_theta": c.rope_theta} if c.rope_scaling is None else \
        {**c.rope_scaling, "rope_theta": c.rope_theta}
    out = {**c.extra, "model_type": c.model_type, "architectures": [ARCHITECTURES[c.model_type]],
           **{k: getattr(c, k) for k in _FIELDS}, "num_key_value_heads": c.num_key_value_heads,
           "head_dim": c.head_dim, "hidden_act": "silu", "rms_norm_eps": c.rms_norm_eps, "rope_parameters": rope,
           "tie_word_embeddings": c.tie_word_embeddings, "mlp_bias": c.mlp_bias,
           "attention_dropout": c.attention_dropout, "dtype": str(np.dtype(dtype))}
    if c.model_type != "qwen2":
        out["attention_bias"] = c.qkv_bias
    return out


def expected_shapes(config):
    """Hugging Face tensor name -> shape for ``config``, computed without building the model."""
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
        layer.update({f"mlp.{n}_proj.bias": (c.intermediate_size if n != "down" else hid,) for n in ("gate", "up", "down")})
    if c.qk_norm:
        layer.update({"self_attn.q_norm.weight": (c.head_dim,), "self_attn.k_norm.weight": (c.head_dim,)})
    shapes = {"model.embed_tokens.weight": (c.vocab_size, hid), "model.norm.weight": (hid,)}
    shapes.update({f"model.layers.{i}.{n}": s for i in range(c.num_hidden_layers) for n, s in layer.items()})
    if not c.tie_word_embeddings:
        shapes["lm_head.weight"] = (c.vocab_size, hid)
    return shapes


def check_config_against_tensors(config, stored, path):
    """Every tensor the config implies must be in the file with that shape, and nothing else
    (a tied lm_head.weight stored anyway is tolerated and checked against the embedding later)."""
    expected = expected_shapes(config)
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected) - {"lm_head.weight"})
    wrong = [f"{n} {tuple(stored[n].shape)} (config implies {s})" for n, s in expected.items()
             if n in stored and tuple(stored[n].shape) != s]
    if missing or unexpected or wrong:
        raise ValueError(f"{path}: config.json disagrees with the weights: missing {missing[:4]}, unexpected "
                         f"{unexpected[:4]}, wrong shapes {wrong[:4]}")
    for name, t in stored.items():
        if t.dtype.kind != "f":
            raise ValueError(f"{path}: tensor {name!r} has dtype {t.dtype}; weights must be floating point")
    if "lm_head.weight" in stored and "lm_head.weight" not in expected and (
            stored["lm_head.weight"].shape != stored["model.embed_tokens.weight"].shape
            or not np.array_equal(stored["lm_head.weight"].read(), stored["model.embed_tokens.weight"].read())):
        raise ValueError(f"{path}: config.json disagrees with the weights: tie_word_embeddings is true but "
                         f"lm_head.weight differs from model.embed_tokens.weight")


def open_index(path):
    """name -> StoredTensor over all shards of a sharded checkpoint, each shard checked against the index."""
    index = read_json(path / INDEX_FILE, "safetensors index")
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise ValueError(f"{path / INDEX_FILE}: needs a 'weight_map' object from tensor names to shard files")
    stored = {}
    for shard in sorted(set(weight_map.values())):
        if Path(shard).name != shard:
            raise ValueError(f"{path / INDEX_FILE}: shard name {shard!r} must be a file name in the folder")
        if not (path / shard).is_file():
            raise FileNotFoundError(f"{path}: shard {shard} named in {INDEX_FILE} is missing")
        tensors, _ = open_safetensors(path / shard)
        listed = {n for n, s in weight_map.items() if s == shard}
        if set(tensors) != listed:
            raise ValueError(f"{path / shard}: its tensors disagree with {INDEX_FILE}: in the shard only "
                             f"{sorted(set(tensors) - listed)[:4]}, in the index only {sorted(listed - set(tensors))[:4]}")
        stored.update(tensors)
    return stored


def open_checkpoint(path):
    """name -> StoredTensor of a folder's weights (one file or shards), headers checked, nothing read."""
    if (path / WEIGHTS_FILE).is_file():
        return open_safetensors(path / WEIGHTS_FILE)[0]
    if (path / INDEX_FILE).is_file():
        return open_index(path)
    hint = " (pickle-based pytorch_model.bin files are never loaded)" if (path / "pytorch_model.bin").exists() else ""
    raise FileNotFoundError(f"weights not found in {path}: neither {WEIGHTS_FILE} nor {INDEX_FILE}{hint}")


class LinearWeight:
    """A stored (out, in) nn.Linear weight, read as lora_np's (in, out)."""

    def __init__(self, stored):
        self.stored, self.shape, self.dtype = stored, tuple(reversed(stored.shape)), stored.dtype

    def read(self):
        return self.stored.read().T


def llama_state_dict(stored, config):
    """Our parameter name -> lazily read value: HF names, Linear weights transposed."""
    sd = {}
    for name in expected_shapes(config):
        value = stored[name]
        sd[name] = LinearWeight(value) if name.endswith("_proj.weight") else value
    return sd


def load_llama(path, dtype=np.float32, quant=None):
    """A ``Llama`` (eval mode) from a llama / qwen2 / qwen3 folder, read tensor by tensor; with
    ``quant`` = (scheme, block_size, double_quant), straight into 4-/8-bit Linear layers."""
    config = llama_config_from_hf(read_json(path / CONFIG_FILE, "model config"), path / CONFIG_FILE)
    stored = open_checkpoint(path)
    check_config_against_tensors(config, stored, path)
    if quant is not None:
        return load_quantized_llama(llama_state_dict(stored, config), config, dtype, quant)
    model = Llama(config, dtype=dtype, empty=True)  # no random draw: every weight is read below
    model.load_state_dict(llama_state_dict(stored, config), strict=True)
    return model.eval()


def load_quantized_llama(sd, config, dtype, quant):
    """The quantized model without the float one: a narrow skeleton (hidden_size and
    intermediate_size 1, so its Linear weights are a few bytes; head_dim and the head counts
    kept) is filled module by module (``quantized_load.fill_quantized``), each Linear weight read,
    quantized and dropped. Peak: the final model plus about one float tensor."""
    scheme, block_size, double_quant = quant
    check_block_sizes({n: w.shape[0] for n, w in sd.items() if n.endswith("_proj.weight")}, block_size, scheme)
    xp = backend.xp

    def read(name):
        return xp.asarray(sd[name].read(), dtype=dtype)

    quant = (scheme, block_size, double_quant, dtype)
    narrow = dataclasses.replace(config, hidden_size=1, intermediate_size=1)
    model = Llama(dataclasses.replace(narrow, vocab_size=1, num_hidden_layers=1), dtype=dtype, empty=True)
    model.config = config
    model.model["layers"] = ModuleList()
    fill_quantized(model, "", read, quant)  # embed_tokens, norm, lm_head
    model.model["layers"] = ModuleList(fill_quantized(LlamaDecoderLayer(narrow, dtype, None), f"model.layers.{i}.",
                                                      read, quant) for i in range(config.num_hidden_layers))
    return model.eval()


def load_model(path, dtype=np.float32, quantize=None, double_quant=True, block_size=64):
    """The model in a Hugging Face folder, by its config.json ``model_type`` (gpt2, llama, qwen2,
    qwen3): a ``GPT`` or a ``Llama``, in eval mode. ``quantize="nf4"`` or ``"int8"``: every Linear
    becomes a frozen 4-bit / 8-bit ``QuantLinear`` (QLoRA's base), embeddings and norms stay float;
    the float model is never built (each weight is read, quantized and dropped in turn)."""
    path = Path(path)
    dtype = model_dtype(dtype)
    scheme = None if quantize is None else check_scheme(quantize)
    if not path.is_dir():
        raise FileNotFoundError(f"model folder not found: {path}")
    cfg = read_json(path / CONFIG_FILE, "model config")
    kind = cfg.get("model_type") if isinstance(cfg, dict) else None
    if kind not in MODEL_TYPES:
        raise ValueError(f"{path / CONFIG_FILE}: model_type {kind!r} is not supported; supported: {list(MODEL_TYPES)}")
    if kind == "gpt2":
        return load_gpt2(path, dtype, quantize=scheme, double_quant=double_quant, block_size=block_size)
    return load_llama(path, dtype, None if scheme is None else (scheme, block_size, double_quant))


def _check_plain_float(model):
    for name, m in model.named_modules():
        if isinstance(getattr(m, "weight", None), QuantWeight):
            raise ValueError(f"save_model: {name} is quantized (NF4/int8 codes) and a model folder holds float "
                             f"weights; call lora_np.dequantize_model(model) first")
        if hasattr(m, "lora_A"):
            raise ValueError(f"save_model: {name} carries a LoRA adapter; save it with save_adapter(), or call "
                             f"merge_and_unload(model) first to save the merged model")


def save_model(model, path):
    """Write a GPT or a Llama as a folder ``from_pretrained`` loads (config.json + model.safetensors,
    each atomically), e.g. after ``merge_and_unload``."""
    if isinstance(model, GPT):
        return save_gpt2(model, path)
    if not isinstance(model, Llama):
        raise TypeError(f"save_model needs a GPT or a Llama; got {type(model).__name__}")
    _check_plain_float(model)
    check_expressible(model.config)
    tensors = {}
    for name, p in model.named_parameters():  # no host copy: write_safetensors takes one tensor at a time
        tensors[name] = p.data.T if name.endswith("_proj.weight") else p.data
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    write_safetensors(path / WEIGHTS_FILE, tensors, metadata={"format": "pt"})
    atomic_write_json(path / CONFIG_FILE, llama_config_to_hf(model.config, model.dtype))
    return path

