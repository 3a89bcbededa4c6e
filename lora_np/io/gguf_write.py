"""Writing GGUF files for llama.cpp: a whole model (F16 or Q8_0), or a LoRA adapter beside its base.

    save_gguf(merged, "model.gguf", "q8_0", tokenizer_from="base.gguf")   # llama-cli -m model.gguf
    save_lora_gguf(model, "adapter.gguf")                       # llama-cli -m base.gguf --lora adapter.gguf

The model file is what llama.cpp's convert_hf_to_gguf.py writes for a llama / qwen2 / qwen3 folder:
``{arch}.*`` hyper-parameters, llama.cpp's tensor names (``gguf_names.py``), q/k rows of a llama model
permuted back into llama.cpp's order, 1-D tensors (norms, biases) in F32 and matrices in F16 or Q8_0
(``gguf.quants.quantize``; a matrix whose rows are not whole 32-value blocks stays F16). The tokenizer
fields (``tokenizer.*``) are copied from a GGUF file, or built from a folder's tokenizer.json (a
byte-level BPE: tokens, token types, merges, special ids and chat template through gguf's
``SpecialVocab``; the pre-tokenizer is named "default", since llama.cpp recognizes a pre-tokenizer by
the hash of its output, which only its converter computes).

The adapter file follows llama.cpp's convert_lora_to_gguf.py: ``general.type = adapter``,
``adapter.type = lora``, ``adapter.lora.alpha``, and per adapted matrix ``<name>.lora_a`` (r, in) and
``<name>.lora_b`` (out, r), PEFT's lora_A / lora_B; for a llama model the rows of q/k's lora_b are
permuted as the base's rows are. llama.cpp scales each pair by alpha / r (r from the tensor), so
alpha is written as scaling·r (= lora_alpha for plain LoRA, lora_alpha·√r for rsLoRA).

Both files are written to a temporary file beside the target and renamed (``atomic.atomic_path``).
"""

from pathlib import Path

import numpy as np

from .. import backend
from ..models import find_family
from ..lora.adapters import active_adapter, lora_layers
from ..quant.gguf_weight import require_gguf
from .atomic import atomic_path, read_json
from .gguf_names import CONFIG_KEYS, PERMUTED_QK, gguf_name, permute_rows, qk_heads
from .gguf_read import find_gguf, open_reader
from .hf_checkpoint import _check_plain_float

OUT_TYPES = ("f16", "q8_0", "f32")
_INT_KEYS = ("context_length", "embedding_length", "block_count", "feed_forward_length", "attention.head_count",
             "attention.head_count_kv", "attention.key_length", "vocab_size")


def _write(writer, path):
    with atomic_path(path) as tmp:
        writer.write_header_to_file(path=Path(tmp))
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return Path(path)


def _add_hparams(writer, cfg):
    arch = cfg["model_type"]
    for key, hf in CONFIG_KEYS.items():
        add = writer.add_uint32 if key in _INT_KEYS else writer.add_float32
        add(f"{arch}.{key}", cfg[hf] if hf != "rope_theta" else cfg["rope_parameters"]["rope_theta"])
    writer.add_uint32(f"{arch}.attention.value_length", cfg["head_dim"])
    writer.add_uint32(f"{arch}.rope.dimension_count", cfg["head_dim"])


def _matrix(gguf, w, outtype):
    """(data, raw GGML type or None) of an (out, in) float matrix in ``outtype``."""
    if outtype == "q8_0" and w.shape[-1] % 32 == 0:
        q = gguf.GGMLQuantizationType.Q8_0
        return gguf.quants.quantize(w.astype(np.float32), q), q
    return w.astype(np.float32 if outtype == "f32" else np.float16), None


def _add_model_tensors(writer, gguf, model, cfg, outtype):
    for name, p in model.named_parameters():
        w = backend.to_numpy(p.data)
        w = w.T if name.endswith("_proj.weight") else w
        heads = qk_heads(name, cfg) if cfg["model_type"] in PERMUTED_QK and w.ndim == 2 else None
        if heads:
            w = permute_rows(w, heads)
        data, raw = _matrix(gguf, w, outtype) if w.ndim == 2 else (w.astype(np.float32), None)
        writer.add_tensor(gguf_name(name), np.ascontiguousarray(data), raw_dtype=raw)


def _copy_tokenizer_fields(writer, reader):
    gguf = require_gguf()
    for key, f in reader.fields.items():
        if key.startswith("tokenizer."):
            array = f.types[0] == gguf.GGUFValueType.ARRAY
            writer.add_key_value(key, f.contents(), f.types[0], sub_type=f.types[-1] if array else None)


def _folder_tokenizer(writer, folder, vocab_size):
    """tokenizer.* fields from a folder's tokenizer.json (byte-level BPE), padded to ``vocab_size``."""
    gguf = require_gguf()
    spec = read_json(folder / "tokenizer.json", "tokenizer file")
    model = spec.get("model") if isinstance(spec, dict) else None
    if not isinstance(model, dict) or model.get("type") != "BPE":
        raise ValueError(f"{folder / 'tokenizer.json'}: only a BPE tokenizer.json can be written to GGUF")
    vocab = {**model["vocab"], **{t["content"]: t["id"] for t in spec.get("added_tokens", [])}}
    special = {t["content"] for t in spec.get("added_tokens", []) if t.get("special")}
    by_id = {i: t for t, i in vocab.items()}
    tokens = [by_id.get(i, f"[PAD{i}]") for i in range(max(vocab_size, len(vocab)))]
    types = [gguf.TokenType.CONTROL if t in special else gguf.TokenType.UNUSED if i not in by_id
             else gguf.TokenType.NORMAL for i, t in enumerate(tokens)]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    gguf.SpecialVocab(folder, load_merges=True, n_vocab=len(tokens)).add_to_gguf(writer)


def add_tokenizer(writer, source, vocab_size):
    """Copy the tokenizer of ``source`` (a GGUF file, or a folder holding one or a tokenizer.json)."""
    source = Path(source)
    gguf_file = find_gguf(source)
    if gguf_file is not None:
        return _copy_tokenizer_fields(writer, open_reader(gguf_file))
    if (source / "tokenizer.json").is_file():
        return _folder_tokenizer(writer, source, vocab_size)
    raise FileNotFoundError(f"no tokenizer to write into the GGUF file: {source} is neither a GGUF file nor a "
                            f"folder holding one or a tokenizer.json")


def _llama_family(model, caller):
    family = find_family(model)
    if family is None or family.name != "llama":  # Gemma 3: its norms would be written as 1 + w, under other names
        raise TypeError(f"{caller} needs a Llama-family model (llama / qwen2 / qwen3); got {type(model).__name__}")
    return family


def save_gguf(model, path, outtype="f16", tokenizer_from=None):
    """Write a float ``Llama`` (e.g. after ``merge_and_unload``) as a GGUF file llama.cpp and transformers
    load; ``outtype`` "f16" or "q8_0" (or "f32"); ``tokenizer_from``: where the tokenizer fields come from."""
    gguf = require_gguf()
    family = _llama_family(model, "save_gguf")
    if outtype not in OUT_TYPES:
        raise ValueError(f"save_gguf: outtype {outtype!r} is not supported; accepted: {list(OUT_TYPES)}")
    _check_plain_float(model)
    if model.config.rope_scaling:
        raise ValueError(f"save_gguf: RoPE scaling {model.config.rope_scaling} is not written to GGUF (unscaled only)")
    cfg = family.config_to_hf(model.config, model.dtype)  # refuses what model_type cannot express
    writer = gguf.GGUFWriter(None, family.gguf_architecture(model.config))
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(Path(path).stem)
    writer.add_file_type({"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
                          "f32": gguf.LlamaFileType.ALL_F32}[outtype])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _add_hparams(writer, cfg)
    if tokenizer_from is not None:
        add_tokenizer(writer, tokenizer_from, cfg["vocab_size"])
    _add_model_tensors(writer, gguf, model, cfg, outtype)
    return _write(writer, path)


def _adapter_pairs(model, name, cfg):
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
        pairs.append((gguf_name(layer_name + ".weight"), a, permute_rows(b, heads) if heads else b,
                      float(scaling) * a.shape[0]))
    return pairs


def save_lora_gguf(model, path, adapter_name=None):
    """Write the (active) LoRA adapter of a ``Llama`` as a llama.cpp LoRA adapter GGUF file."""
    gguf = require_gguf()
    family = _llama_family(model, "save_lora_gguf")
    name = adapter_name or active_adapter(model)
    cfg = family.config_to_hf(model.config, model.dtype)
    pairs = _adapter_pairs(model, name, cfg)
    alphas = sorted({round(p[3], 6) for p in pairs})
    if not pairs or len(alphas) != 1:
        raise ValueError(f"save_lora_gguf: adapter {name!r} needs at least one LoRA Linear and one alpha/r "
                         f"ratio·r for all (llama.cpp has one adapter.lora.alpha); got {alphas}")
    writer = gguf.GGUFWriter(None, family.gguf_architecture(model.config))
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, pairs[0][3])
    for tensor, a, b, _ in pairs:
        writer.add_tensor(tensor + ".lora_a", np.ascontiguousarray(a, dtype=np.float32))
        writer.add_tensor(tensor + ".lora_b", np.ascontiguousarray(b, dtype=np.float32))
    return _write(writer, path)

