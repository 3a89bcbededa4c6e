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

import numpy as np

from .. import backend
from ..autograd import Parameter
from ..model import GPT, Block
from ..nn import LayerNorm, Linear, ModuleList
from ..quant.blocks import check_block_size
from ..quant.linear import QuantLinear
from ..quant.weight import QuantWeight
from .gpt2_layout import check_config_against_tensors, check_tied_lm_head, state_dict_from_checkpoint
from .safetensors_file import open_safetensors


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
    names, _ = open_safetensors(weights)
    sd, lm_head = state_dict_from_checkpoint(names, weights)
    check_config_against_tensors(config, sd, weights.parent)
    _check_names_and_shapes(sd, config, weights)
    for name, entry in sd.items():
        if name.endswith(".weight") and len(entry.shape) == 2 and ".h." in name:
            check_block_size(block_size, entry.shape[:1], f"rows of {name}ᵀ (in_features)", even=scheme == "nf4")
    def read(name):
        return xp.asarray(sd[name].read(), dtype=dtype)

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
    check_tied_lm_head(lm_head, tr.wte.weight, weights)
    return model
