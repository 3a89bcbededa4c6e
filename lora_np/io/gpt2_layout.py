"""GPT-2's Hugging Face layout: the config.json fields and the tensor names of model.safetensors.

    config.json         n_embd, n_layer, n_head, n_positions (or n_ctx), vocab_size, ... -> GPTConfig
    model.safetensors   "transformer.h.0.attn.c_attn.weight" (768, 2304), ... (the hub's files omit
                        "transformer." and carry attention-mask buffers and a tied lm_head.weight)

Shared by the float loader (``gpt2_checkpoint.py``) and the quantized one (``gpt2_quantized.py``),
which check the same things before building anything.
"""

import numpy as np

from ..backend import to_numpy
from ..model import GPTConfig

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


def config_from_hf(cfg, path="config.json"):
    """A GPTConfig from a Hugging Face GPT-2 config dict, refusing variants this model does not compute."""
    def field(name, *alternatives):
        for key in (name,) + alternatives:
            if key in cfg:
                return cfg[key]
        raise ValueError(f"{path}: missing field {name!r} (a GPT-2 config needs n_embd, n_layer, n_head, "
                         f"n_positions, vocab_size)")

    n_embd = field("n_embd")
    if cfg.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(f"{path}: activation_function {cfg['activation_function']!r} is not supported; "
                         f"lora_np computes GPT-2's tanh GELU ('gelu_new')")
    if cfg.get("n_inner") is not None and cfg.get("n_inner") != (4 * n_embd if type(n_embd) is int else None):
        raise ValueError(f"{path}: n_inner={cfg['n_inner']!r} is not supported; the MLP width is 4·n_embd")
    eps = cfg.get("layer_norm_epsilon", 1e-5)
    if type(eps) not in (int, float) or abs(eps - 1e-5) > 1e-12:
        raise ValueError(f"{path}: layer_norm_epsilon={eps!r} is not supported; GPT-2 uses 1e-5")
    dropout = cfg.get("resid_pdrop", 0.1)
    if type(dropout) not in (int, float):
        raise ValueError(f"{path}: resid_pdrop={dropout!r} must be a number in [0, 1)")
    for flag, wanted in (("scale_attn_by_inverse_layer_idx", False), ("reorder_and_upcast_attn", False),
                         ("scale_attn_weights", True), ("tie_word_embeddings", True)):
        if cfg.get(flag, wanted) != wanted:
            raise ValueError(f"{path}: {flag}={cfg[flag]} is not supported (GPT-2 uses {wanted})")
    return GPTConfig(vocab_size=field("vocab_size"), block_size=field("n_positions", "n_ctx"),
                     n_layer=field("n_layer"), n_head=field("n_head"), n_embd=n_embd,
                     dropout=float(dropout), bias=True)


def config_to_hf(config, dtype):
    return {
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
        "vocab_size": config.vocab_size, "n_positions": config.block_size, "n_ctx": config.block_size,
        "n_embd": config.n_embd, "n_layer": config.n_layer, "n_head": config.n_head, "n_inner": None,
        "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5, "initializer_range": 0.02,
        "resid_pdrop": config.dropout, "embd_pdrop": config.dropout, "attn_pdrop": config.dropout,
        "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True, "bos_token_id": None, "eos_token_id": None,
        "dtype": str(np.dtype(dtype)), "torch_dtype": str(np.dtype(dtype)),
    }


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
    """The config's sizes must match the file's embeddings and layer count, checked before a model of
    that size is built (a damaged config could otherwise ask for an enormous one)."""
    expected = {"transformer.wte.weight": (config.vocab_size, config.n_embd),
                "transformer.wpe.weight": (config.block_size, config.n_embd)}
    for key, shape in expected.items():
        if key not in sd or sd[key].shape != shape:
            found = sd[key].shape if key in sd else "nothing"
            raise ValueError(f"{path}: config.json implies {key} of shape {shape}; the weights hold {found}")
    layers = {key.split(".")[2] for key in sd if key.startswith("transformer.h.")}
    if len(layers) != config.n_layer or layers != {str(i) for i in range(config.n_layer)}:  # count first: cheap
        raise ValueError(f"{path}: config.json says n_layer={config.n_layer}; the weights hold {len(layers)} layers")


def check_tied_lm_head(lm_head, wte, weights):
    """A stored lm_head.weight is accepted only if it equals the token embedding (GPT-2 ties them)."""
    if lm_head is not None and (lm_head.shape != wte.shape or not np.array_equal(lm_head.read(), to_numpy(wte))):
        raise ValueError(f"{weights}: lm_head.weight differs from transformer.wte.weight; "
                         f"lora_np's GPT ties the LM head to the token embedding")
