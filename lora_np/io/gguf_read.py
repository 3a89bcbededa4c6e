"""Reading a GGUF file (llama.cpp's format) as a Hugging Face folder would be read.

    cfg, stored = open_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")
    cfg        {"model_type": "llama", "hidden_size": 576, ...}    what config.json would hold
    stored     {"model.layers.0.self_attn.q_proj.weight": GGUFTensor, ...}   HF names, (out, in) shapes

``hf_checkpoint.load_model`` then builds and fills the model exactly as from a folder (the config
and tensor-name maps are in ``gguf_names.py``). Parsing and dequantizing are llama.cpp's own
``gguf`` package (``GGUFReader`` maps the file; ``gguf.quants.dequantize`` decodes blocks): no
GGUF parser lives here. Each tensor is decoded only when read, and q/k rows of a llama-architecture
file are put back in Hugging Face's order (``gguf_names.unpermute_rows``). With
``quantize="gguf"`` a Linear weight stays in its blocks instead (``GGUFTensor.quant_weight``).
"""

from pathlib import Path

import numpy as np

from ..quant.gguf_weight import GGUFWeight, ggml_type, require_gguf
from ..tokenizer.gguf_tokenizer import open_gguf as open_reader  # the one opener: missing, unreadable, no gguf
from .gguf_names import (
    ARCH_CONFIG_KEYS,
    ARCHITECTURES,
    CONFIG_KEYS,
    MODEL_TYPES,
    NORM_OFFSET,
    PERMUTED_QK,
    hf_name,
    qk_heads,
    unpermute_rows,
)

TOKENS = "tokenizer.ggml.tokens"
READ_ROWS = 4096


def find_gguf(path):
    """The GGUF file that ``path`` names: ``path`` itself if it ends in .gguf, the one .gguf file of a
    folder without model.safetensors; None for anything else (a Hugging Face folder)."""
    path = Path(path)
    if path.suffix.lower() == ".gguf":
        return path
    if not path.is_dir() or any(path.glob("model.safetensors*")):
        return None
    files = sorted(path.glob("*.gguf"))
    if len(files) > 1:
        raise ValueError(f"{path}: holds {len(files)} GGUF files ({', '.join(f.name for f in files[:4])}); "
                         f"name the one to load")
    return files[0] if files else None


def field(reader, key, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


class GGUFTensor:
    """One tensor of the file under its Hugging Face name: HF ``shape`` ((out, in) for a matrix), float32
    ``dtype``; ``read()`` dequantizes it, ``quant_weight()`` keeps its blocks. ``n_head``: the head count
    whose rows llama.cpp permuted (None: stored in HF order); ``offset``: what llama.cpp added to the
    values (Gemma's norms, stored as 1 + w), subtracted by ``read()``."""

    def __init__(self, tensor, n_head, path, offset=0.0):
        self.tensor, self.n_head, self.type_name, self.offset = tensor, n_head, tensor.tensor_type.name, offset
        ggml_type(self.type_name, f"{path}: tensor {tensor.name}")
        self.shape = tuple(int(n) for n in reversed(tensor.shape))  # ggml lists the fastest axis first
        self.dtype = np.dtype(np.float32)

    def _hf_rows(self, rows):
        return rows if self.n_head is None else unpermute_rows(rows, self.n_head)

    def _rows(self):
        """The stored bytes, one row of the (out, in) matrix per row (a 1-D tensor: one row), HF order."""
        rows = np.asarray(self.tensor.data).view(np.uint8).reshape(self.shape[0] if len(self.shape) == 2 else 1, -1)
        return rows if len(self.shape) == 1 else self._hf_rows(rows)

    def read(self):
        """The float32 values in HF layout, decoded ``READ_ROWS`` rows at a time into one new array (never
        a view of the file), so that a large embedding costs itself plus one chunk's temporaries."""
        gguf = require_gguf()
        rows, out = self._rows(), np.empty(self.shape, np.float32)
        flat = out.reshape(rows.shape[0], -1)
        for r in range(0, rows.shape[0], READ_ROWS):
            flat[r:r + READ_ROWS] = gguf.quants.dequantize(rows[r:r + READ_ROWS], self.tensor.tensor_type)
        if self.offset:
            out -= np.float32(self.offset)
        return out

    def blocks(self):
        """The stored bytes of each row of the (out, in) matrix, rows in HF order (a copy, not the mapping)."""
        return np.ascontiguousarray(self._rows())

    def quant_weight(self, dtype=np.float32):
        """The frozen (in, out) weight in its GGUF blocks (``quant/gguf_weight.py``)."""
        return GGUFWeight(self.type_name, self.blocks(), self.shape[::-1], dtype)


def hf_config(reader, path):
    """The config.json that this file's ``{arch}.*`` metadata stands for (transformers' GGUF mapping)."""
    arch = field(reader, "general.architecture")
    if arch not in ARCHITECTURES:
        raise ValueError(f"{path}: GGUF architecture {arch!r} is not supported; lora_np reads {list(ARCHITECTURES)}")
    cfg = {"model_type": MODEL_TYPES.get(arch, arch)}
    keys = {**CONFIG_KEYS, **ARCH_CONFIG_KEYS.get(arch, {})}
    cfg.update({hf: field(reader, f"{arch}.{key}") for key, hf in keys.items() if f"{arch}.{key}" in reader.fields})
    if "vocab_size" not in cfg and TOKENS in reader.fields:
        cfg["vocab_size"] = len(reader.fields[TOKENS].data)
    if arch == "llama" and "head_dim" not in cfg and f"{arch}.rope.dimension_count" in reader.fields:
        cfg["head_dim"] = field(reader, f"{arch}.rope.dimension_count")
    if arch == "gemma3" and "head_dim" in cfg:  # llama.cpp scales scores by 1/√key_length (gguf_names.py)
        cfg["query_pre_attn_scalar"] = cfg["head_dim"]
    scaling = field(reader, f"{arch}.rope.scaling.type", "none")
    if scaling == "linear":  # Gemma 3 4B and larger: the family's config checks whether it computes it
        cfg["rope_scaling"] = {"rope_type": "linear", "factor": field(reader, f"{arch}.rope.scaling.factor")}
    elif scaling != "none":
        raise ValueError(f"{path}: RoPE scaling {scaling!r} is not supported from GGUF metadata (unscaled or "
                         f"linear RoPE only)")
    names = {t.name for t in reader.tensors}
    cfg["tie_word_embeddings"] = "output.weight" not in names
    cfg["attention_bias"] = arch != "qwen2" and "blk.0.attn_q.bias" in names
    return cfg


def hf_tensors(reader, cfg, path):
    """HF name -> GGUFTensor for every tensor of the file; a tensor with no HF counterpart is refused."""
    stored, arch = {}, field(reader, "general.architecture")
    for t in reader.tensors:
        name = hf_name(t.name, arch)
        if name is None:
            hint = " (Llama 3 RoPE frequency scaling)" if t.name.startswith("rope_freqs") else ""
            raise ValueError(f"{path}: tensor {t.name!r}{hint} has no counterpart in a {cfg['model_type']} model here")
        heads = qk_heads(name, cfg) if cfg["model_type"] in PERMUTED_QK and name.endswith(".weight") else None
        offset = NORM_OFFSET.get(arch, 0.0) if name.endswith("norm.weight") else 0.0
        stored[name] = GGUFTensor(t, heads, path, offset)
    return stored


def open_gguf(path):
    """(HF config dict, HF name -> GGUFTensor) of the GGUF file ``path``: headers checked, nothing decoded."""
    reader = open_reader(path)
    cfg = hf_config(reader, path)
    return cfg, hf_tensors(reader, cfg, path)
