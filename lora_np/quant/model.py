"""Quantizing and dequantizing a whole model in memory.

    quantize_model(model, "nf4")    every Linear (and the base of every LoraLinear) -> 4-bit codes
    quantize_model(model, "bf16")   ... -> bfloat16 words (rounded to nearest even, as torch does)
    dequantize_model(model)         back to float Parameters W = deq(Q), exactly the values the
                                    quantized model computed with (not the original W: the
                                    rounding is permanent)
    is_quantized(model)

Merging an adapter into a 4-bit base (``merge_lora`` / ``merge_and_unload`` on a QLoRA model)
follows PEFT's Linear4bit.merge: W' = deq(Q) + s·AᵀBᵀ, computed in float32, then quantized again
(the ``QuantWeight.data`` setter), with fresh block absmaxes. The requantization rounds every
weight to the nearest NF4 level of its new block: an error up to half a level gap times the
block's absmax (about 0.14·absmax between the two outermost levels, ~0.04·absmax near zero),
which is as large as the first quantization's and typically larger than ΔW itself, so the merged
4-bit model is *not* the adapted model (tests/test_qlora.py measures it). ``unmerge`` subtracts
and requantizes again, so it does not give back the original codes either. To keep the adapted
function exactly: ``dequantize_model(model)`` first, then merge in float
(``merge_and_unload`` then gives deq(Q) + ΔW bit for bit as a float merge would), and
``quantize_model`` again only if 4-bit storage matters more than that rounding.
"""

from ..autograd import Parameter
from ..nn import Linear
from .blocks import check_block_size
from .linear import QuantLinear, quantize_weight
from .table import FrozenTable
from .weight import QuantWeight, check_scheme


def _parent_and_attr(model, name):
    parent_name, _, attr = name.rpartition(".")
    return dict(model.named_modules())[parent_name], attr


def _wrapped_linears(model):
    """(name, layer) of every layer that holds a Linear's float ``weight`` without being a Linear: LoRA's
    ``LoraLinear`` (found by what it holds, so that quant needs nothing from lora)."""
    return [(n, m) for n, m in model.named_modules() if not isinstance(m, Linear) and hasattr(m, "in_features")
            and isinstance(getattr(m, "weight", None), Parameter)]


def is_quantized(model):
    """True if any layer of ``model`` holds a QuantWeight (or a frozen vocabulary table, quant/table.py)."""
    return any(isinstance(getattr(m, "weight", None), (QuantWeight, FrozenTable)) for _, m in model.named_modules())


def quantize_model(model, scheme="nf4", block_size=64, double_quant=True):
    """Quantize every float Linear weight of ``model`` in place (biases, embeddings, norms stay float).
    All block sizes are checked before anything changes. Returns the model."""
    scheme = check_scheme(scheme)
    if any(getattr(m, "merged_adapter", None) for _, m in model.named_modules()):
        raise ValueError("quantize_model: an adapter is merged into the weights; call unmerge_lora(model) first")
    plain = [(n, m) for n, m in model.named_modules() if type(m) is Linear]
    adapted = _wrapped_linears(model)
    for name, m in plain + adapted if scheme != "bf16" else []:  # bf16 has no blocks
        check_block_size(block_size, (m.in_features,), f"rows of {name}'s Wᵀ (in_features)", even=scheme == "nf4")
    for name, m in plain:
        parent, attr = _parent_and_attr(model, name)
        setattr(parent, attr, QuantLinear.from_linear(m, scheme, block_size, double_quant))
    for _, m in adapted:
        m.weight = quantize_weight(m.weight.data, scheme, block_size, double_quant)
    return model


def dequantize_model(model):
    """Replace every QuantWeight (and frozen table) by a float Parameter holding deq(Q). Frozen (requires_grad False)
    where the model carries LoRA adapters, trainable otherwise. Returns the model."""
    trainable = not getattr(model, "peft_config", None)
    for name, m in list(model.named_modules()):
        if isinstance(m, QuantLinear):
            parent, attr = _parent_and_attr(model, name)
            weight = Parameter(m.weight.dequantize(), requires_grad=trainable)
            setattr(parent, attr, Linear.from_parameters(weight, m.bias))
        elif isinstance(getattr(m, "weight", None), (QuantWeight, FrozenTable)):  # a table: (V, C) as it was
            m.weight = Parameter(m.weight.dequantize(), requires_grad=trainable)
    return model
