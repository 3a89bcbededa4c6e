"""GPT-2's files as the hub has them: model.safetensors checked against config.json.

    model.safetensors   "transformer.h.0.attn.c_attn.weight" (768, 2304), ... (the hub's files omit
                        "transformer." and carry attention-mask buffers and a tied lm_head.weight)

The config and the tensor names and shapes are the family's spec (``models/gpt2_spec.py``).

Shared by the float loader (``gpt2_checkpoint.py``) and the quantized one (``gpt2_quantized.py``),
which check the same things before building anything.
"""

import numpy as np

from ..backend import to_numpy
from ..models.gpt2_spec import GPT2
from .tensor_shapes import check_tensor_shapes

CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
_TOP_LEVEL = ("wte.", "wpe.", "h.", "ln_f.")
_BUFFERS = (".attn.bias", ".attn.masked_bias")


def model_dtype(dtype):
    """float32 or float64 as a NumPy dtype; anything else is a ValueError."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64; got {dtype!r}")
    return dt


def state_dict_from_checkpoint(tensors, path=WEIGHTS_FILE):
    """(our state dict, the stored lm_head.weight or None): add the "transformer." prefix where
    missing and drop the causal-mask buffers. The values may be arrays or not-yet-read
    ``StoredTensor``s: only their dtype and shape are looked at here. A tied lm_head is checked
    against wte by ``check_tied_lm_head`` once wte is loaded."""
    sd, lm_head = {}, None
    for key, value in tensors.items():
        base = key[len("transformer."):] if key.startswith("transformer.") else key
        if base.endswith(_BUFFERS):
            continue
        if value.dtype.kind != "f":
            raise ValueError(f"{path}: tensor {key!r} has dtype {value.dtype}; weights must be floating point")
        if key == "lm_head.weight":
            lm_head = value
        elif base.startswith(_TOP_LEVEL):
            sd["transformer." + base] = value
        else:
            raise ValueError(f"{path}: unexpected tensor {key!r}; a GPT-2 checkpoint holds wte, wpe, h.*, ln_f "
                             f"(optionally under 'transformer.') and a tied lm_head")
    return sd, lm_head


def check_config_against_tensors(config, sd, path):
    """The config's sizes must match the file's embeddings and layer count, then every tensor the
    spec names must be there with its shape: checked before a model of that size is built (a
    damaged config could otherwise ask for an enormous one)."""
    expected = {"transformer.wte.weight": (config.vocab_size, config.n_embd),
                "transformer.wpe.weight": (config.block_size, config.n_embd)}
    for key, shape in expected.items():
        if key not in sd or sd[key].shape != shape:
            found = sd[key].shape if key in sd else "nothing"
            raise ValueError(f"{path}: config.json implies {key} of shape {shape}; the weights hold {found}")
    layers = {key.split(".")[2] for key in sd if key.startswith("transformer.h.")}
    if len(layers) != config.n_layer or layers != {str(i) for i in range(config.n_layer)}:  # count first: cheap
        raise ValueError(f"{path}: config.json says n_layer={config.n_layer}; the weights hold {len(layers)} layers")
    check_tensor_shapes(GPT2.tensor_shapes(config), sd, path)


def check_tied_lm_head(lm_head, wte, weights):
    """A stored lm_head.weight is accepted only if it equals the token embedding (GPT-2 ties them)."""
    if lm_head is not None and (lm_head.shape != wte.shape or not np.array_equal(lm_head.read(), to_numpy(wte))):
        raise ValueError(f"{weights}: lm_head.weight differs from transformer.wte.weight; "
                         f"lora_np's GPT ties the LM head to the token embedding")
