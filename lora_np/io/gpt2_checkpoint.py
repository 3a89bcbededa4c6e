"""GPT-2 checkpoints in the Hugging Face layout, read and written without torch.

    <dir>/config.json         GPT-2 field names: n_embd, n_layer, n_head, n_positions, vocab_size, ...
    <dir>/model.safetensors   "transformer.h.0.attn.c_attn.weight" (768, 2304), ...

``GPT2LMHeadModel.from_pretrained(dir)`` reads what ``save_gpt2`` writes, and ``load_gpt2`` reads
what ``save_pretrained`` writes, including the original hub files (keys without the
"transformer." prefix, attention-mask buffers, float16/bfloat16 tensors). Pickle files
(pytorch_model.bin) are never opened.
"""

from pathlib import Path

import numpy as np

from ..models import GPT, find_family
from ..models.gpt2_spec import GPT2, config_from_hf, config_to_hf
from ..quant.weight import QuantWeight, check_scheme
from .atomic import atomic_write_json, read_json
from .gpt2_layout import (CONFIG_FILE, WEIGHTS_FILE, check_config_against_tensors, check_tied_lm_head, model_dtype,
                          state_dict_from_checkpoint)
from .gpt2_quantized import load_quantized_gpt2
from .safetensors_file import open_safetensors, write_safetensors


def load_gpt2(path, dtype=np.float32, quantize=None, double_quant=True, block_size=64):
    """A GPT (in eval mode, like from_pretrained) from a Hugging Face GPT-2 checkpoint directory.

    ``quantize="nf4"`` (QLoRA's 4-bit NormalFloat) or ``"int8"``: every Linear becomes a frozen
    ``QuantLinear`` holding only codes and per-block statistics (``block_size`` weights per absmax;
    ``double_quant`` quantizes those too), read and quantized tensor by tensor so the float32 model
    never exists; embeddings and layer norms stay float (``gpt2_quantized.py``).
    """
    path = Path(path)
    dtype = model_dtype(dtype)
    if quantize is not None:
        quantize = check_scheme(quantize)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint directory not found: {path}")
    config = config_from_hf(read_json(path / CONFIG_FILE, "GPT-2 config"), path / CONFIG_FILE)
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        hint = (" (only model.safetensors is read: pickle-based pytorch_model.bin files are never loaded)"
                if (path / "pytorch_model.bin").exists() else "")
        raise FileNotFoundError(f"weights not found: {weights}{hint}")
    if quantize is not None:
        return load_quantized_gpt2(weights, config, dtype, quantize, block_size, double_quant).eval()
    stored, _ = open_safetensors(weights)  # the header, checked; tensors are read one at a time below
    sd, lm_head = state_dict_from_checkpoint(stored, weights)
    check_config_against_tensors(config, sd, path)
    model = GPT(config, dtype=dtype, empty=True)  # placeholders: every weight is read below
    try:
        model.load_state_dict(sd, strict=True)
    except ValueError as exc:
        raise ValueError(f"{weights} does not match {path / CONFIG_FILE}: {exc}") from None
    check_tied_lm_head(lm_head, model.transformer.wte.weight, weights)
    return model.eval()


def save_gpt2(model, path, dtype=None):
    """Write ``model`` as config.json + model.safetensors (each atomically) into directory ``path``;
    ``dtype`` ("float32", "bfloat16", "float16"; default: the model's) is what the weights are stored as."""
    if find_family(model) is not GPT2:
        raise TypeError(f"save_gpt2 needs a GPT; got {type(model).__name__}")
    if any(isinstance(getattr(m, "weight", None), QuantWeight) for _, m in model.named_modules()):
        raise ValueError("save_gpt2: this model's Linear layers are quantized (NF4/int8 codes), and a GPT-2 "
                         "checkpoint holds float weights; call lora_np.dequantize_model(model) first")
    if any(hasattr(m, "lora_A") for _, m in model.named_modules()):
        raise ValueError("save_gpt2: this model carries LoRA adapters; save them with save_adapter(), "
                         "or call merge_and_unload(model) first to save a merged GPT-2")
    if not model.config.bias:
        raise ValueError("save_gpt2: the GPT-2 checkpoint format needs bias=True")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {name: p.data for name, p in model.named_parameters()}  # no host copy: written one by one
    write_safetensors(path / WEIGHTS_FILE, tensors, metadata={"format": "pt"}, float_dtype=dtype)
    atomic_write_json(path / CONFIG_FILE, config_to_hf(model.config, dtype or model.dtype))
    return path
