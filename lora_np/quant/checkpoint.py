"""Loading a GPT-2 checkpoint straight into a quantized model, one tensor at a time.

``load_gpt2(path, quantize="nf4")`` lands here. The float model is never built: the safetensors
header is read and checked first (names, shapes, config agreement: nothing is allocated for a
file that does not fit), then each tensor is read on its own from the file, quantized if it is a
Linear weight, and dropped. The peak is therefore the final model plus the largest single tensor
(for GPT-2, the float32 token embedding, which QLoRA keeps in float32 anyway), instead of the
whole float32 file, the float32 model and a copy of both.

Quantized: every Linear weight (c_attn, c_proj, c_fc: 85M of GPT-2 small's 124M parameters).
Kept in float32: wte (and the tied LM head), wpe, layer norms and all biases, as in QLoRA and
transformers' ``BitsAndBytesConfig(load_in_4bit=True)``.
"""

import dataclasses
import json

import numpy as np

from .. import backend
from ..autograd import Parameter
from ..io.gpt2_checkpoint import check_config_against_tensors, state_dict_from_checkpoint
from ..io.safetensors_file import DTYPES, decode_tensor, tensor_entry
from ..model import GPT, Block
from ..nn import LayerNorm, Linear, ModuleList
from .blocks import check_block_size
from .linear import QuantLinear
from .weight import QuantWeight


class _Stored:
    """A tensor of the file, known by its header entry until ``read``."""

    def __init__(self, dtype, shape, offsets):
        self.dtype = np.dtype(np.float32) if dtype == "BF16" else np.dtype(DTYPES[dtype])
        self.stored, self.shape, self.offsets = dtype, shape, offsets


class TensorFile:
    """The tensors of one .safetensors file, read one at a time; the header is validated on open
    with the same checks as ``read_safetensors`` (each entry's dtype, shape and byte span)."""

    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            size = path.stat().st_size
            if n < 0 or n > size - 8:
                raise ValueError(f"{path}: header length does not fit in the file's {size} bytes "
                                 f"(truncated or not safetensors)")
            try:
                header = json.loads(f.read(n).decode("utf-8"))
            except (UnicodeDecodeError, ValueError, RecursionError) as exc:
                raise ValueError(f"{path}: header is not valid UTF-8 JSON ({type(exc).__name__}: {exc})") from None
        if not isinstance(header, dict):
            raise ValueError(f"{path}: header must be a JSON object; got {type(header).__name__}")
        header.pop("__metadata__", None)
        self.start = 8 + n
        self.entries = {name: _Stored(*tensor_entry(path, name, info, size - self.start))
                        for name, info in header.items()}

    def read(self, name):
        """The tensor ``name`` as a host NumPy array (little-endian F32 read in place, others decoded)."""
        entry = self.entries[name]
        begin, end = entry.offsets
        raw = np.empty(end - begin, dtype=np.uint8)
        with open(self.path, "rb") as f:
            f.seek(self.start + begin)
            if f.readinto(raw) != raw.size:
                raise ValueError(f"{self.path}: tensor {name!r} is cut short (the file is truncated)")
        if entry.stored == "F32" and np.little_endian:
            return raw.view(np.float32).reshape(entry.shape)
        return decode_tensor(raw, entry.stored, entry.shape)


def _linear_names(block):
    return [n for n, m in block.named_modules() if isinstance(m, Linear)]


def _expected_shapes(config):
    """Parameter name -> shape of the float GPT that ``config`` describes, without building it."""
    one_block = Block(dataclasses.replace(config, n_embd=config.n_head), np.float32)
    scale = config.n_embd // config.n_head
    shapes = {"transformer.wte.weight": (config.vocab_size, config.n_embd),
              "transformer.wpe.weight": (config.block_size, config.n_embd),
              "transformer.ln_f.weight": (config.n_embd,), "transformer.ln_f.bias": (config.n_embd,)}
    for i in range(config.n_layer):
        for name, p in one_block.named_parameters():
            shapes[f"transformer.h.{i}.{name}"] = tuple(n * scale for n in p.shape)
    return shapes


def _check_names_and_shapes(sd, config, where):
    expected = _expected_shapes(config)
    missing, unexpected = sorted(set(expected) - set(sd)), sorted(set(sd) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{where}: missing keys {missing[:8]}, unexpected keys {unexpected[:8]}")
    for name, shape in expected.items():
        if tuple(sd[name].shape) != shape:
            raise ValueError(f"{where}: {name} has shape {tuple(sd[name].shape)} in the file, {shape} in the model")


def _fill_layer_norm(module, read, name, width):
    module.weight, module.bias = Parameter(read(name + ".weight")), Parameter(read(name + ".bias"))
    module.normalized_shape = width


def load_quantized_gpt2(weights, config, dtype, scheme, block_size=64, double_quant=True):
    """A GPT whose Linear layers are ``QuantLinear`` (``scheme`` = "nf4" or "int8"), read tensor by tensor."""
    xp = backend.xp
    tensors = TensorFile(weights)
    names = dict(tensors.entries)
    lm_head = names.pop("lm_head.weight", None)
    sd = state_dict_from_checkpoint(names, weights)
    check_config_against_tensors(config, sd, weights.parent)
    _check_names_and_shapes(sd, config, weights)
    for name, entry in sd.items():
        if name.endswith(".weight") and len(entry.shape) == 2 and ".h." in name:
            check_block_size(block_size, entry.shape[:1], f"rows of {name}ᵀ (in_features)", even=scheme == "nf4")
    file_name = {id(entry): name for name, entry in names.items()}
    key = {ours: file_name[id(entry)] for ours, entry in sd.items()}

    def read(name):
        return xp.asarray(tensors.read(key[name]), dtype=dtype)

    narrow = dataclasses.replace(config, n_embd=config.n_head)
    model = GPT(dataclasses.replace(narrow, vocab_size=1, block_size=1, n_layer=1), dtype=dtype)
    model.config = config
    tr = model.transformer
    for emb, rows in (("wte", config.vocab_size), ("wpe", config.block_size)):
        tr[emb].weight, tr[emb].num_embeddings = Parameter(read(f"transformer.{emb}.weight")), rows
    _fill_layer_norm(tr.ln_f, read, "transformer.ln_f", config.n_embd)
    blocks = []
    for i in range(config.n_layer):
        block = Block(narrow, dtype)  # n_embd = n_head: its random weights are negligible and all replaced
        prefix = f"transformer.h.{i}."
        for name in _linear_names(block):
            parent_name, _, attr = name.rpartition(".")
            parent = dict(block.named_modules())[parent_name]
            w = QuantWeight.from_float(read(prefix + name + ".weight"), scheme, block_size, double_quant, dtype)
            setattr(parent, attr, QuantLinear(w, Parameter(read(prefix + name + ".bias"))))
        for name, module in block.named_modules():
            if isinstance(module, LayerNorm):
                _fill_layer_norm(module, read, prefix + name, config.n_embd)
        blocks.append(block)
    tr["h"] = ModuleList(blocks)
    if lm_head is not None and not np.array_equal(tensors.read("lm_head.weight"), backend.to_numpy(tr.wte.weight.data)):
        raise ValueError(f"{weights}: lm_head.weight differs from transformer.wte.weight; "
                         f"lora_np's GPT ties the LM head to the token embedding")
    return model
