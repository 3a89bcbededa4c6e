"""Loading a GPT-2 checkpoint straight into a quantized model, one tensor at a time.

``load_gpt2(path, quantize="nf4")`` lands here. The float model is never built: the safetensors
header is read and checked first (names, shapes, config agreement: nothing is allocated for a
file that does not fit), then each tensor is read on its own from the file, quantized if it is a
Linear weight, and dropped (``quantized_load.fill_quantized``, shared with the Llama family). The peak is therefore the final model plus the largest single tensor
(for GPT-2, the float32 token embedding, which QLoRA keeps in float32 anyway), instead of the
whole float32 file, the float32 model and a copy of both.

Quantized: every Linear weight (c_attn, c_proj, c_fc: 85M of GPT-2 small's 124M parameters).
Kept in float32: wte (and the tied LM head), wpe, layer norms and all biases, as in QLoRA and
transformers' ``BitsAndBytesConfig(load_in_4bit=True)``.
"""

import dataclasses

import numpy as np

from .. import backend
from ..model import GPT, Block
from ..nn import ModuleList
from .gpt2_layout import check_config_against_tensors, check_tied_lm_head, state_dict_from_checkpoint
from .quantized_load import check_block_sizes, fill_quantized
from .safetensors_file import open_safetensors


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


def load_quantized_gpt2(weights, config, dtype, scheme, block_size=64, double_quant=True):
    """A GPT whose Linear layers are ``QuantLinear`` (``scheme`` = "nf4" or "int8"), read tensor by tensor."""
    xp = backend.xp
    names, _ = open_safetensors(weights)
    sd, lm_head = state_dict_from_checkpoint(names, weights)
    check_config_against_tensors(config, sd, weights.parent)
    _check_names_and_shapes(sd, config, weights)
    check_block_sizes({n: e.shape[0] for n, e in sd.items() if n.endswith(".weight") and len(e.shape) == 2
                       and ".h." in n}, block_size, scheme)

    def read(name):
        return xp.asarray(sd[name].read(), dtype=dtype)

    quant = (scheme, block_size, double_quant, dtype)
    narrow = dataclasses.replace(config, n_embd=config.n_head)  # n_embd = n_head: negligible random weights
    model = GPT(dataclasses.replace(narrow, vocab_size=1, block_size=1, n_layer=1), dtype=dtype)
    model.config = config
    tr = model.transformer
    tr["h"] = ModuleList()
    fill_quantized(model, "", read, quant)  # wte, wpe, ln_f
    tr["h"] = ModuleList(fill_quantized(Block(narrow, dtype), f"transformer.h.{i}.", read, quant)
                         for i in range(config.n_layer))
    check_tied_lm_head(lm_head, tr.wte.weight, weights)
    return model
