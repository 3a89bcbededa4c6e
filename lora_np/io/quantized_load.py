"""Filling a model from a checkpoint straight into 4-/8-bit codes, one tensor at a time.

What the GPT-2 loader (gpt2_quantized.py) and the spec-driven one (hf_checkpoint.py) share. Each
builds its model at full size with ``empty=True``: every weight a placeholder of the right shape
with no memory behind it (``nn.init.placeholder``), then hands it to ``fill_quantized``: every
``Linear`` becomes a ``QuantLinear`` of its stored weight, read as float, quantized and dropped at
once; every other parameter (embeddings, norms, biases) is read as stored. The peak is the final
model plus about one float tensor in flight, instead of the whole float32 model beside its codes.

``read(name)`` returns the named tensor as a float array in lora_np's layout ((in, out) for a
Linear weight); both loaders pass a function over their checked headers.
"""

from ..autograd import Parameter
from ..nn import Linear
from ..quant.blocks import check_block_size
from ..quant.linear import QuantLinear, quantize_weight

def check_block_sizes(in_features, block_size, scheme):
    """Every Linear's in_features ({weight name: n}) must split into whole blocks: checked for all
    of them before anything is read, so a bad block size fails at once, not after minutes of work.
    (bf16 has no blocks.)"""
    for name, n in in_features.items() if scheme != "bf16" else {}:
        check_block_size(block_size, (n,), f"rows of {name}ᵀ (in_features)", even=scheme == "nf4")


def _read_parameters(module, prefix, read, table_weight=None):
    """The module's own parameters (not its children's) read as stored, each checked against the
    placeholder's shape (the spec's shapes were checked against the file before); a vocabulary table
    that ``table_weight(name)`` keeps frozen in its storage (not None) is set as that."""
    for attr, p in [(n, p) for n, p in module.named_parameters() if "." not in n]:
        table = table_weight(prefix + attr) if table_weight else None
        if table is not None:
            setattr(module, attr, table)
            continue
        value = read(prefix + attr)
        if value.shape != p.shape:
            raise ValueError(f"{prefix + attr} has shape {value.shape} in the file, {p.shape} in the model")
        setattr(module, attr, Parameter(value))


def fill_quantized(module, prefix, read, quant, linear_weight=None, table_weight=None):
    """Fill ``module`` (whose parameters are named ``prefix + name`` in the checkpoint) from ``read``:
    each plain Linear -> QuantLinear(quantized weight, float bias), every other parameter read.
    ``quant`` = (scheme, block_size, double_quant, dtype); ``linear_weight(name)``, if given, returns
    a Linear's frozen weight as stored instead (a GGUF file's blocks, a bf16 file's words);
    ``table_weight(name)``, if given, the token embedding / LM head as a frozen table (quant/table.py),
    or None for a parameter read as float. Returns the module."""
    modules = list(module.named_modules())
    parents = dict(modules)
    for name, m in modules:
        full = prefix + name + "." if name else prefix
        if type(m) is Linear:
            parent_name, _, attr = name.rpartition(".")
            name_w = full + "weight"
            w = linear_weight(name_w) if linear_weight else quantize_weight(read(name_w), *quant)
            bias = None if m.bias is None else Parameter(read(full + "bias"))
            setattr(parents[parent_name], attr, QuantLinear(w, bias))
        elif not isinstance(m, Linear):
            _read_parameters(m, full, read, table_weight)
    return module
