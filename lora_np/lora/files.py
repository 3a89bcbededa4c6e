"""Adapter files in PEFT's format, so adapters move both ways between lora_np and Hugging Face PEFT.

    <dir>/adapter_config.json        {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": [...], ...}
    <dir>/adapter_model.safetensors  "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight"  (r, in)
                                     "base_model.model.transformer.h.0.attn.c_attn.lora_B.weight"  (out, r)
                                     "base_model.model.transformer.h.0.attn.c_attn.lora_magnitude_vector"  (out,)  DoRA
                                     "base_model.model.transformer.wte.lora_embedding_A"  (r, vocab)   LoRA on wte
                                     "base_model.model.transformer.wte.lora_embedding_B"  (n_embd, r)
                                     "base_model.model.model.embed_tokens.weight"  (vocab, C)  modules_to_save

``PeftModel.from_pretrained(gpt2, dir)`` reads what ``save_adapter`` writes and ``load_adapter``
reads what PEFT's ``save_pretrained`` writes. Loading checks every key and shape against the
model before changing anything. A ``modules_to_save`` copy of the token embedding is stored under
the module's own name, as PEFT stores it; PEFT's ``ensure_weight_tying`` (a tied head reading the
copy, saved as ``lm_head.weight`` too) is refused: here the head keeps the base table, PEFT's default.
"""

from pathlib import Path

from .. import backend
from ..io.atomic import atomic_write_json, read_json
from ..io.safetensors_file import read_safetensors, write_safetensors
from ..models import family_of
from ..nn import Linear
from .adapters import (
    _require_adapter,
    _target_layers,
    active_adapter,
    adapter_names,
    add_lora,
    lora_layers,
    saved_modules,
)
from .config import LoraConfig
from .embedding import LoraEmbedding
from .layer import LoraLinear
from .saved_embedding import SavedEmbedding

CONFIG_FILE, WEIGHTS_FILE = "adapter_config.json", "adapter_model.safetensors"
PREFIX = "base_model.model."


def _peft_config_dict(config, fan_in_fan_out, base_model_name_or_path=None):
    targets = config.target_modules if isinstance(config.target_modules, str) else list(config.target_modules)
    return {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": config.r, "lora_alpha": config.lora_alpha,
        "target_modules": targets, "lora_dropout": config.lora_dropout, "use_rslora": config.use_rslora,
        "fan_in_fan_out": fan_in_fan_out, "bias": "none", "init_lora_weights": config.init_lora_weights,
        "inference_mode": True,
        "base_model_name_or_path": base_model_name_or_path, "layers_to_transform": None,
        "modules_to_save": None if config.modules_to_save is None else list(config.modules_to_save),
        "layers_pattern": None, "rank_pattern": {}, "alpha_pattern": {}, "use_dora": config.use_dora, "revision": None,
    }


def _config_from_peft(cfg, path):
    if cfg.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"{path}: peft_type {cfg.get('peft_type')!r} is not supported; only 'LORA'")
    unsupported = {"bias": "none", "layers_to_transform": None, "rank_pattern": {}, "alpha_pattern": {},
                   "ensure_weight_tying": False}
    for key, plain in unsupported.items():
        if cfg.get(key, plain) not in (plain, None):
            raise ValueError(f"{path}: {key}={cfg[key]!r} is not supported by lora_np (expected {plain!r})")
    for key in ("r", "lora_alpha", "target_modules"):
        if key not in cfg:
            raise ValueError(f"{path}: missing field {key!r}")
    targets = cfg["target_modules"]
    if not isinstance(targets, (str, list)):
        raise ValueError(f"{path}: target_modules must be a list of module names or a regular expression; "
                         f"got {targets!r}")
    dropout, saved = cfg.get("lora_dropout", 0.0), cfg.get("modules_to_save")
    try:  # LoraConfig checks every value (init_lora_weights among lora_np's choices...); the file is named
        return LoraConfig(r=cfg["r"], lora_alpha=cfg["lora_alpha"],
                          target_modules=targets if isinstance(targets, str) else tuple(targets),
                          lora_dropout=0.0 if dropout is None else dropout,
                          use_rslora=cfg.get("use_rslora", False) is True, use_dora=cfg.get("use_dora", False) is True,
                          init_lora_weights=cfg.get("init_lora_weights", True), modules_to_save=saved)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def _fan_in_fan_out(model):
    """PEFT's ``fan_in_fan_out`` for ``model``'s Hugging Face twin, from its family's spec: True when its
    checkpoint stores weights (in, out), as GPT-2's Conv1D does; False for nn.Linear's (out, in). lora_np
    keeps every weight (in, out) and the files' lora_A (r, in) / lora_B (out, r) are the same either way:
    the flag only tells PEFT the base's layout (set wrongly, PEFT warns and corrects it). Loading accepts both."""
    return family_of(model).fan_in_fan_out


def save_adapter(model, path, adapter_name=None, metadata=None, base_model_name_or_path=None):
    """Write one adapter (the active one by default) as adapter_config.json + adapter_model.safetensors;
    ``metadata`` (str -> str) goes into the safetensors header. ``base_model_name_or_path`` (the base's
    hub name or folder, as PEFT records it) is where ``AutoPeftModelForCausalLM.from_pretrained``
    finds the base; without it PEFT can load the adapter only onto a base model it is given."""
    name = adapter_name or active_adapter(model)
    _require_adapter(model, name, " to save")
    tensors = {}
    for module_name, layer in lora_layers(model):
        if name in layer.adapter_names():
            for suffix, param in layer.file_tensors(name).items():
                tensors[f"{PREFIX}{module_name}.{suffix}"] = param.data
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    write_safetensors(path / WEIGHTS_FILE, tensors, metadata={**(metadata or {}), "format": "pt"})
    base = None if base_model_name_or_path is None else str(base_model_name_or_path)
    atomic_write_json(path / CONFIG_FILE, _peft_config_dict(model.peft_config[name], _fan_in_fan_out(model), base))
    return path


def _staged_weights(model, config, tensors, path):
    """Check the file's keys and shapes against the layers ``config`` targets: module -> {suffix: array}."""
    staged = {}
    for module_name, layer in _target_layers(model, config):
        kind = LoraLinear if isinstance(layer, (Linear, LoraLinear)) else LoraEmbedding
        if kind is LoraEmbedding:
            LoraEmbedding.check_config(config)
        staged[module_name] = {}
        for suffix, shape in kind.file_shapes(layer, config).items():
            key = f"{PREFIX}{module_name}.{suffix}"
            if key not in tensors:
                raise ValueError(f"{path}: missing key {key!r} for target module {module_name}")
            if tensors[key].shape != shape:
                raise ValueError(f"{path}: {key} has shape {tensors[key].shape}, the model needs {shape} "
                                 f"(an adapter for another base model?)")
            staged[module_name][suffix] = tensors.pop(key)
    try:
        saved = saved_modules(model, config)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    for module_name, layer in saved:
        staged[module_name] = _staged_saved_copy(layer, config, tensors, f"{PREFIX}{module_name}.weight", path)
    if tensors:
        raise ValueError(f"{path}: unexpected keys {sorted(tensors)[:5]}: they name no LoRA target of this model")
    return staged


def _staged_saved_copy(layer, config, tensors, key, path):
    """{"weight": array} of a modules_to_save copy, its key and shape checked."""
    shape = SavedEmbedding.file_shapes(layer, config)["weight"]
    if key not in tensors:
        raise ValueError(f"{path}: missing key {key!r} for modules_to_save {list(config.modules_to_save)}")
    if tensors[key].shape != shape:
        raise ValueError(f"{path}: {key} has shape {tensors[key].shape}, the model's embedding is {shape}")
    return {"weight": tensors.pop(key)}


def load_adapter(model, path, adapter_name="default"):
    """Read a PEFT LoRA adapter into ``model`` under ``adapter_name`` (added if absent). On any error
    the model is left exactly as it was."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"adapter directory not found: {path}")
    config = _config_from_peft(read_json(path / CONFIG_FILE, "adapter config"), path / CONFIG_FILE)
    tensors, _ = read_safetensors(path / WEIGHTS_FILE)
    for key, value in tensors.items():
        if value.dtype.kind != "f":
            raise ValueError(f"{path / WEIGHTS_FILE}: {key} has dtype {value.dtype}; "
                             f"LoRA weights must be floating point")
    tensors = {(k if k.startswith(PREFIX) else PREFIX + k): v for k, v in tensors.items()}
    # PEFT < 0.12 wrote DoRA's magnitude as "...lora_magnitude_vector.weight"; PEFT reads both, so do we
    tensors = {k.removesuffix(".weight") if k.endswith(".lora_magnitude_vector.weight") else k: v
               for k, v in tensors.items()}
    staged = _staged_weights(model, config, tensors, path / WEIGHTS_FILE)
    if adapter_name in adapter_names(model):
        existing = model.peft_config[adapter_name]
        if (existing.r, existing.target_modules, existing.use_dora) != (config.r, config.target_modules,
                                                                         config.use_dora):
            raise ValueError(f"adapter {adapter_name!r} already exists with r={existing.r}, targets "
                             f"{existing.target_modules!r}, use_dora={existing.use_dora}; the file has r={config.r}, "
                             f"{config.target_modules!r}, use_dora={config.use_dora}")
        model.peft_config[adapter_name] = config
    else:
        add_lora(model, config, adapter_name, every_target=False)
    layers = dict(lora_layers(model))
    for module_name, arrays in staged.items():
        layer = layers[module_name]
        params = layer.file_tensors(adapter_name)
        for suffix, array in arrays.items():
            params[suffix].data = backend.xp.array(array, dtype=layer.weight.dtype)
        if isinstance(layer, SavedEmbedding):
            continue
        layer.scaling[adapter_name] = config.scaling
        if isinstance(layer, LoraLinear):
            layer.lora_dropout[adapter_name] = config.lora_dropout
    return model
