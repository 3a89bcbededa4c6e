"""GPT-2's spec (spec.py): its Hugging Face config.json and tensors, PEFT layout and LoRA defaults.

    config.json         n_embd, n_layer, n_head, n_positions (or n_ctx), vocab_size, ... <-> GPTConfig
    model.safetensors   "transformer.h.0.attn.c_attn.weight" (768, 2304), ... stored (in, out): Conv1D
"""


from .gpt2 import GPT, GPTConfig
from .spec import ModelFamily, Sizes, dtype_name


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
        "dtype": dtype_name(dtype), "torch_dtype": dtype_name(dtype),
    }


def tensor_shapes(config):
    """Tensor name -> shape of a GPT-2 checkpoint (save_pretrained's names) for ``config``; the LM
    head is tied to wte and not a tensor of its own. ``bias=False`` drops the Linear biases and
    the layer norms' (lora_np can build such a GPT; its checkpoint format cannot hold one)."""
    c, C = config, config.n_embd
    linears = {"attn.c_attn": (C, 3 * C), "attn.c_proj": (C, C), "mlp.c_fc": (C, 4 * C), "mlp.c_proj": (4 * C, C)}
    block = {}
    for norm, linear in (("ln_1", ("attn.c_attn", "attn.c_proj")), ("ln_2", ("mlp.c_fc", "mlp.c_proj"))):
        block[f"{norm}.weight"] = (C,)
        if c.bias:
            block[f"{norm}.bias"] = (C,)
        for name in linear:
            block[f"{name}.weight"] = linears[name]
            if c.bias:
                block[f"{name}.bias"] = linears[name][1:]
    shapes = {"transformer.wte.weight": (c.vocab_size, C), "transformer.wpe.weight": (c.block_size, C)}
    shapes.update({f"transformer.h.{i}.{n}": s for i in range(c.n_layer) for n, s in block.items()})
    shapes["transformer.ln_f.weight"] = (C,)
    if c.bias:
        shapes["transformer.ln_f.bias"] = (C,)
    return shapes


def sizes(config):
    return Sizes(config.vocab_size, config.block_size, config.n_layer, config.n_embd, config.n_head)


GPT2 = ModelFamily(
    name="gpt2", model_types=("gpt2",), model_class=GPT, config_class=GPTConfig,
    config_from_hf=config_from_hf, config_to_hf=config_to_hf, tensor_shapes=tensor_shapes, sizes=sizes,
    fan_in_fan_out=True, linear_weights=("c_attn.weight", "c_proj.weight", "c_fc.weight"),
    lora_targets=("c_attn",),  # PEFT's default for GPT-2: the fused q|k|v projection
    gguf_architectures={"gpt2": "gpt2"})
