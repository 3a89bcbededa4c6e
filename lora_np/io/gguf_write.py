"""Writing GGUF files for llama.cpp: a whole model (F16 or Q8_0), or a LoRA adapter beside its base.

    save_gguf(merged, "model.gguf", "q8_0", tokenizer_from="base.gguf")   # llama-cli -m model.gguf
    save_lora_gguf(model, "adapter.gguf")                       # llama-cli -m base.gguf --lora adapter.gguf

The model file is what llama.cpp's convert_hf_to_gguf.py writes for a llama / qwen2 / qwen3 / Gemma 3
folder: ``{arch}.*`` hyper-parameters (Gemma 3's sliding window and, where set, final-logit soft-cap and
linear RoPE scaling beside them), llama.cpp's tensor names (``gguf_names.py``), q/k rows of a llama
model permuted back into llama.cpp's order, Gemma's norm weights stored as 1 + w (``Gemma3Model``'s
``norm_shift``; every reader subtracts it again), 1-D tensors (norms, biases) in F32 and matrices in F16
or Q8_0 (``gguf.quants.quantize``; a matrix whose rows are not whole 32-value blocks stays F16). What a
file cannot say is refused, with the reason: RoPE scaling on a llama, and for Gemma 3 what llama.cpp
fixes instead of reading (the 5:1 layer pattern, the local RoPE base 10,000, scores scaled by
1/√head_dim). The tokenizer fields come from ``gguf_tokenizer_write.py``.

The adapter file follows llama.cpp's convert_lora_to_gguf.py: ``general.type = adapter``,
``adapter.type = lora``, ``adapter.lora.alpha``, and per adapted matrix ``<name>.lora_a`` (r, in) and
``<name>.lora_b`` (out, r), PEFT's lora_A / lora_B; for a llama model the rows of q/k's lora_b are
permuted as the base's rows are (a Gemma 3 adapter is written as it is: no permutation, and no norm
is adapted). llama.cpp scales each pair by alpha / r (r from the tensor), so
alpha is written as scaling·r (= lora_alpha for plain LoRA, lora_alpha·√r for rsLoRA).

Both files are written to a temporary file beside the target and renamed (``atomic.atomic_path``).
"""

from pathlib import Path

import numpy as np

from .. import backend
from ..models import find_family
from ..models.gemma3 import pattern_layer_types
from ..lora.adapters import active_adapter, lora_layers
from ..quant.gguf_weight import require_gguf
from .atomic import atomic_path
from .gguf_names import ARCH_CONFIG_KEYS, CONFIG_KEYS, NORM_OFFSET, PERMUTED_QK, gguf_name, permute_rows, qk_heads
from .gguf_tokenizer_write import add_tokenizer
from .hf_checkpoint import _check_plain_float

OUT_TYPES = ("f16", "q8_0", "f32")
_INT_KEYS = ("context_length", "embedding_length", "block_count", "feed_forward_length", "attention.head_count",
             "attention.head_count_kv", "attention.key_length", "vocab_size", "attention.sliding_window")
FAMILIES = ("llama", "gemma3")  # what save_gguf / save_lora_gguf write


def _write(writer, path):
    with atomic_path(path) as tmp:
        writer.write_header_to_file(path=Path(tmp))
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return Path(path)


def _add_hparams(writer, gguf, cfg, arch):
    """``{arch}.*``: CONFIG_KEYS and the architecture's own (a null one, as Gemma's usual
    final_logit_softcapping, is left out as the converter leaves it), and Gemma's linear RoPE scaling."""
    for key, hf in {**CONFIG_KEYS, **ARCH_CONFIG_KEYS.get(arch, {})}.items():
        if cfg.get(hf) is not None:
            (writer.add_uint32 if key in _INT_KEYS else writer.add_float32)(f"{arch}.{key}", cfg[hf])
    writer.add_uint32(f"{arch}.attention.value_length", cfg["head_dim"])
    writer.add_uint32(f"{arch}.rope.dimension_count", cfg["head_dim"])
    if cfg.get("rope_scaling"):  # Gemma 3 only (save_gguf refuses a scaled Llama): linear, global layers
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(cfg["rope_scaling"]["factor"])


def _matrix(gguf, w, outtype):
    """(data, raw GGML type or None) of an (out, in) float matrix in ``outtype``."""
    if outtype == "q8_0" and w.shape[-1] % 32 == 0:
        q = gguf.GGMLQuantizationType.Q8_0
        return gguf.quants.quantize(w.astype(np.float32), q), q
    return w.astype(np.float32 if outtype == "f32" else np.float16), None


def _add_model_tensors(writer, gguf, model, cfg, arch, outtype):
    """Every parameter under llama.cpp's name: (out, in) matrices, q/k rows permuted for "llama",
    norm weights + NORM_OFFSET for Gemma (llama.cpp multiplies by the stored weight, Gemma by 1 + w)."""
    for name, p in model.named_parameters():
        w = backend.to_numpy(p.data)
        w = w.T if name.endswith("_proj.weight") else w
        heads = qk_heads(name, cfg) if cfg["model_type"] in PERMUTED_QK and w.ndim == 2 else None
        if heads:
            w = permute_rows(w, heads)
        if name.endswith("norm.weight") and arch in NORM_OFFSET:
            w = w.astype(np.float32) + np.float32(NORM_OFFSET[arch])
        data, raw = _matrix(gguf, w, outtype) if w.ndim == 2 else (w.astype(np.float32), None)
        writer.add_tensor(gguf_name(name, arch), np.ascontiguousarray(data), raw_dtype=raw)


def _written_family(model, caller):
    family = find_family(model)
    if family is None or family.name not in FAMILIES:
        raise TypeError(f"{caller} needs a Llama-family or Gemma 3 model (llama / qwen2 / qwen3 / "
                        f"gemma3_text); got {type(model).__name__}")
    return family


def _unwritable(family, c):
    """What the GGUF file of ``c`` could not hold (None: nothing): llama.cpp reads no RoPE scaling of a
    llama here, and fixes Gemma 3's layer pattern, local RoPE base and score scale (gguf_names.py)."""
    if family.name == "llama":
        return f"RoPE scaling {c.rope_scaling} (unscaled only)" if c.rope_scaling else None
    if c.layer_types != pattern_layer_types(c.num_hidden_layers, 6):
        return f"layer_types {c.layer_types} (llama.cpp fixes the 5:1 pattern: every 6th layer global)"
    if c.rope_local_base_freq != 10000.0:
        return f"rope_local_base_freq={c.rope_local_base_freq} (llama.cpp fixes the local layers' base at 10000)"
    if c.query_pre_attn_scalar != c.head_dim:
        return (f"query_pre_attn_scalar={c.query_pre_attn_scalar} with head_dim={c.head_dim} (llama.cpp scales "
                f"scores by 1/sqrt(head_dim); the two must be equal)")
    return "attention biases (llama.cpp's gemma3 has none)" if c.qkv_bias or c.o_bias else None


def save_gguf(model, path, outtype="f16", tokenizer_from=None):
    """Write a float ``Llama`` or ``Gemma3`` (e.g. after ``merge_and_unload``) as a GGUF file llama.cpp and
    transformers load; ``outtype`` "f16" or "q8_0" (or "f32"); ``tokenizer_from``: where the tokenizer
    fields come from."""
    gguf = require_gguf()
    family = _written_family(model, "save_gguf")
    if outtype not in OUT_TYPES:
        raise ValueError(f"save_gguf: outtype {outtype!r} is not supported; accepted: {list(OUT_TYPES)}")
    _check_plain_float(model)
    unwritable = _unwritable(family, model.config)
    if unwritable:
        raise ValueError(f"save_gguf: a GGUF file cannot hold {unwritable}")
    cfg = family.config_to_hf(model.config, model.dtype)  # refuses what model_type cannot express
    arch = family.gguf_architecture(model.config)
    writer = gguf.GGUFWriter(None, arch)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(Path(path).stem)
    writer.add_file_type({"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
                          "f32": gguf.LlamaFileType.ALL_F32}[outtype])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _add_hparams(writer, gguf, cfg, arch)
    if tokenizer_from is not None:
        add_tokenizer(writer, tokenizer_from, cfg["vocab_size"])
    _add_model_tensors(writer, gguf, model, cfg, arch, outtype)
    return _write(writer, path)


def _adapter_pairs(model, name, cfg, arch):
    """(gguf name, lora_a (r, in), lora_b (out, r), scaling·r) of every layer carrying adapter ``name``."""
    pairs = []
    for layer_name, layer in lora_layers(model):
        if name not in layer.adapter_names():
            continue
        if name in getattr(layer, "lora_magnitude_vector", {}) or not hasattr(layer, "in_features"):
            raise ValueError(f"save_lora_gguf: {layer_name} is not a plain LoRA Linear (DoRA and embedding "
                             f"adapters have no llama.cpp LoRA form)")
        a, b, scaling = (backend.to_numpy(t) if i < 2 else t for i, t in enumerate(layer.factors(name)))
        heads = qk_heads(layer_name + ".", cfg) if cfg["model_type"] in PERMUTED_QK else None
        pairs.append((gguf_name(layer_name + ".weight", arch), a, permute_rows(b, heads) if heads else b,
                      float(scaling) * a.shape[0]))
    return pairs


def save_lora_gguf(model, path, adapter_name=None):
    """Write the (active) LoRA adapter of a ``Llama`` or ``Gemma3`` as a llama.cpp LoRA adapter GGUF file."""
    gguf = require_gguf()
    family = _written_family(model, "save_lora_gguf")
    name = adapter_name or active_adapter(model)
    cfg = family.config_to_hf(model.config, model.dtype)
    arch = family.gguf_architecture(model.config)
    pairs = _adapter_pairs(model, name, cfg, arch)
    alphas = sorted({round(p[3], 6) for p in pairs})
    if not pairs or len(alphas) != 1:
        raise ValueError(f"save_lora_gguf: adapter {name!r} needs at least one LoRA Linear and one alpha/r "
                         f"ratio·r for all (llama.cpp has one adapter.lora.alpha); got {alphas}")
    writer = gguf.GGUFWriter(None, arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, pairs[0][3])
    for tensor, a, b, _ in pairs:
        writer.add_tensor(tensor + ".lora_a", np.ascontiguousarray(a, dtype=np.float32))
        writer.add_tensor(tensor + ".lora_b", np.ascontiguousarray(b, dtype=np.float32))
    return _write(writer, path)

