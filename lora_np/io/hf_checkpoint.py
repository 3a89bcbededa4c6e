"""Hugging Face model folders of any supported family: ``load_model(path)`` and ``save_model(model, path)``.

    <dir>/config.json                      "model_type": "gpt2" | "llama" | "qwen2" | "qwen3", sizes, RoPE
    <dir>/model.safetensors                one file, or
    <dir>/model.safetensors.index.json     {"weight_map": {tensor name: shard file}} and the shards

config.json's ``model_type`` picks the family's spec (``lora_np.models``): GPT-2 folders, with
their hub-file quirks, go to ``load_gpt2``; any other family is read here from its spec alone: its
config, then the file headers checked against the tensor names and shapes the config implies (each
shard against the index too), all before the model is built. Tensors are then read one at a time
(bfloat16 and float16 widened to float32 on the way, ``io/safetensors_file.py``), and each Linear
weight stored (out, in) (the spec's ``fan_in_fan_out`` is False) is transposed into lora_np's
(in, out). With ``quantize``, each Linear weight is quantized as soon as it is read
(``io/quantized_load.py``): the float32 model is never built. Pickle files are never opened.
"""

from pathlib import Path

import numpy as np

from .. import backend
from ..models import family_for_type, find_family
from ..quant.bf16 import Bf16Weight
from ..quant.table import FrozenTable
from ..quant.weight import QuantWeight, check_scheme
from .atomic import atomic_write_json, read_json
from .gguf_read import find_gguf, open_gguf
from .gpt2_checkpoint import CONFIG_FILE, WEIGHTS_FILE, load_gpt2, model_dtype, save_gpt2
from .quantized_load import check_block_sizes, fill_quantized
from .safetensors_file import open_safetensors, write_safetensors
from .tensor_shapes import check_tensor_shapes

INDEX_FILE = "model.safetensors.index.json"
HEAD, EMBEDDING = "lm_head.weight", "model.embed_tokens.weight"


def check_config_against_tensors(family, config, stored, path):
    """Every tensor the config implies must be in the file with that shape, and nothing else
    (a tied lm_head.weight stored anyway is tolerated if it equals the embedding)."""
    expected = family.tensor_shapes(config)
    check_tensor_shapes(expected, stored, path, tolerated=(HEAD,))
    for name, t in stored.items():
        if t.dtype.kind != "f":
            raise ValueError(f"{path}: tensor {name!r} has dtype {t.dtype}; weights must be floating point")
    if HEAD in stored and HEAD not in expected and (
            stored[HEAD].shape != stored[EMBEDDING].shape
            or not np.array_equal(stored[HEAD].read(), stored[EMBEDDING].read())):
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
                             f"{sorted(set(tensors) - listed)[:4]}, in the index only "
                             f"{sorted(listed - set(tensors))[:4]}")
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

    def frozen_bf16(self, dtype):
        """The weight as a frozen ``Bf16Weight``: a bf16 file's (out, in) words are Wᵀ as it keeps them,
        taken word for word (never widened); any other dtype is rounded to bfloat16."""
        return bf16_store(self.stored, self.shape, dtype)


def bf16_store(stored, shape, dtype):
    """A stored (out, in) matrix as a ``Bf16Weight`` of (in, out) ``shape``: a bf16 file's words taken
    as they are (never widened); any other dtype rounded to bfloat16."""
    if getattr(stored, "stored", None) == "BF16":  # a safetensors tensor stored as bf16
        return Bf16Weight(stored.read_raw(), shape, dtype)
    return Bf16Weight.from_float(stored.read().T, dtype=dtype)


def frozen_tables(stored, quant, dtype):
    """``table_weight`` for ``fill_quantized``: under quant "gguf" or "bf16", the token embedding and an
    untied LM head stay frozen in the file's storage (GGUF blocks, bf16 words) as ``FrozenTable``s. Under
    "nf4" / "int8" they do so when the file stores them in bfloat16, as the hub ships most models: the
    words are taken as they are (exact), and the table costs half of float32 (Qwen2.5-1.5B's tied table:
    445 instead of 890 MiB, more than its 28 layers of NF4 codes), as bitsandbytes + PEFT keep it in the
    bf16 the model was loaded in; a float32 file's table is read as a float Parameter. None: no table."""
    if quant is None:
        return None
    gguf, bf16 = quant == "gguf", quant != "gguf" and quant[0] == "bf16"

    def table_weight(name):
        if name not in (EMBEDDING, HEAD) or name not in stored:
            return None
        t = stored[name]
        if gguf:
            return FrozenTable(t.quant_weight(dtype))
        if bf16 or getattr(t, "stored", None) == "BF16":  # nf4 / int8: a bf16 file's words only
            return FrozenTable(bf16_store(t, t.shape[::-1], dtype))
        return None

    return table_weight


def flip_linear(family):
    """True when the family's files store Linear weights (out, in), nn.Linear's layout."""
    return not family.fan_in_fan_out


def model_state_dict(family, stored, config):
    """Our parameter name -> lazily read value: the spec's names, Linear weights transposed when
    the family's files store them (out, in)."""
    flip = flip_linear(family)
    return {name: LinearWeight(stored[name]) if flip and family.is_linear_weight(name) else stored[name]
            for name in family.tensor_shapes(config)}


def load_family(path, family, dtype=np.float32, quant=None, source=None):
    """A model of ``family`` (eval mode) from a folder, read tensor by tensor; with ``quant`` =
    (scheme, block_size, double_quant), straight into 4-/8-bit or bf16 Linear layers. ``source``:
    (config dict, stored tensors) of another format (a GGUF file, ``gguf_read.open_gguf``), checked and
    loaded the same way; there ``quant="gguf"`` keeps each Linear weight in the file's blocks."""
    if source is None:
        config = family.config_from_hf(read_json(path / CONFIG_FILE, "model config"), path / CONFIG_FILE)
        stored = open_checkpoint(path)
    else:
        config, stored = family.config_from_hf(source[0], path), source[1]
    check_config_against_tensors(family, config, stored, path)
    sd = model_state_dict(family, stored, config)
    model = family.model_class(config, dtype=dtype, empty=True)  # placeholders: every weight is read below
    if quant is None:
        model.load_state_dict(sd, strict=True)
        return model.eval()
    xp = backend.xp

    def read(name):
        return xp.asarray(sd[name].read(), dtype=dtype)

    tables = frozen_tables(stored, quant, dtype)
    if quant == "gguf":
        return fill_quantized(model, "", read, None, lambda name: stored[name].quant_weight(dtype), tables).eval()
    scheme, block_size, double_quant = quant
    check_block_sizes({n: w.shape[0] for n, w in sd.items() if family.is_linear_weight(n)}, block_size, scheme)
    bf16_words = scheme == "bf16" and flip_linear(family)  # taken from the file as they are
    linear_weight = (lambda name: sd[name].frozen_bf16(dtype)) if bf16_words else None
    return fill_quantized(model, "", read, (scheme, block_size, double_quant, dtype), linear_weight, tables).eval()


def load_model(path, dtype=np.float32, quantize=None, double_quant=True, block_size=64):
    """The model in a Hugging Face folder, by its config.json ``model_type`` (gpt2, llama, qwen2,
    qwen3): a ``GPT`` or a ``Llama``, in eval mode. ``quantize="nf4"`` or ``"int8"``: every Linear
    becomes a frozen 4-bit / 8-bit ``QuantLinear`` (QLoRA's base), embeddings and norms stay float;
    the float model is never built (each weight is read, quantized and dropped in turn). A GGUF
    file, or a folder holding one and no model.safetensors, is read with llama.cpp's ``gguf``
    package (``io/gguf_read.py``); ``quantize="gguf"`` keeps its Linear weights in their blocks.
    ``quantize="bf16"``: every Linear keeps its weight frozen in bfloat16 (a bf16 file's words as
    they are, half float32's memory), widened band by band inside its matmul; the computation is
    float32's (``dtype``) on those values. Under "gguf" and "bf16" the token embedding and an untied
    LM head stay in the file's storage too, as frozen tables (``quant/table.py``); under "nf4" and "int8"
    they do when the file stores them in bfloat16 (``frozen_tables``)."""
    path = Path(path)
    dtype = model_dtype(dtype)
    gguf_file = find_gguf(path)
    if gguf_file is not None:
        cfg, stored = open_gguf(gguf_file)
        quant = quantize if quantize in (None, "gguf") else (check_scheme(quantize), block_size, double_quant)
        return load_family(gguf_file, family_for_type(cfg["model_type"], gguf_file), dtype, quant, (cfg, stored))
    scheme = None if quantize is None else check_scheme(quantize)
    if not path.is_dir():
        raise FileNotFoundError(f"model folder not found: {path}")
    cfg = read_json(path / CONFIG_FILE, "model config")
    family = family_for_type(cfg.get("model_type") if isinstance(cfg, dict) else None, path / CONFIG_FILE)
    if family.name == "gpt2":  # the hub's GPT-2 files have quirks of their own (gpt2_layout.py)
        return load_gpt2(path, dtype, quantize=scheme, double_quant=double_quant, block_size=block_size)
    return load_family(path, family, dtype, None if scheme is None else (scheme, block_size, double_quant))


def _check_plain_float(model):
    for name, m in model.named_modules():
        if isinstance(getattr(m, "weight", None), (QuantWeight, FrozenTable)):
            raise ValueError(f"save_model: {name} is quantized (NF4/int8 codes, bf16 words, GGUF blocks) and a "
                             f"model folder holds float weights; call lora_np.dequantize_model(model) first")
        if hasattr(m, "lora_A"):
            raise ValueError(f"save_model: {name} carries a LoRA adapter; save it with save_adapter(), or call "
                             f"merge_and_unload(model) first to save the merged model")


def save_model(model, path, dtype=None):
    """Write a GPT or a Llama as a folder ``from_pretrained`` loads (config.json + model.safetensors,
    each atomically), e.g. after ``merge_and_unload``. ``dtype`` ("float32", "bfloat16", "float16";
    default: the model's) is what the weights are stored as, converted one tensor at a time.

    Only the model is written: no tokenizer files (a model holds no tokenizer), and no
    generation_config.json. Copy those from the base folder beside it, as ``lora_np merge`` does;
    a tokenizer lora_np built itself is written by its own ``tokenizer.save(path)``."""
    family = find_family(model)
    if family is None:
        raise TypeError(f"save_model needs a GPT or a Llama; got {type(model).__name__}")
    if family.name == "gpt2":
        return save_gpt2(model, path, dtype)
    _check_plain_float(model)
    config_json = family.config_to_hf(model.config, dtype or model.dtype)  # refuses what model_type cannot express
    flip = not family.fan_in_fan_out
    tensors = {}
    for name, p in model.named_parameters():  # no host copy: write_safetensors takes one tensor at a time
        tensors[name] = p.data.T if flip and family.is_linear_weight(name) else p.data
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    write_safetensors(path / WEIGHTS_FILE, tensors, metadata={"format": "pt"}, float_dtype=dtype)
    atomic_write_json(path / CONFIG_FILE, config_json)
    return path
