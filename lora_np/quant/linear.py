"""``QuantLinear``: a frozen Linear whose weight is held as NF4 or int8 codes (a ``QuantWeight``),
or as bfloat16 words (a ``Bf16Weight``, the same interface).

It is a ``Linear`` (so ``add_lora`` targets it by name like any other) whose ``weight`` is not a
Parameter: no gradient, no optimizer state, not in ``state_dict``. The bias stays a float32
Parameter, as in bitsandbytes' Linear4bit. ``add_lora`` wraps it in a ``LoraLinear`` as it wraps a
float Linear; that layer sees the ``QuantWeight`` and calls ``quant_lora_linear`` (lora/layer.py).
"""

from ..nn import Linear, Module
from .linear_op import quant_linear
from .bf16 import Bf16Weight
from .weight import QuantWeight


def quantize_weight(w, scheme="nf4", block_size=64, double_quant=True, dtype=None):
    """A float (in, out) weight as the frozen weight of ``scheme``: NF4/int8 codes or bf16 words."""
    kind = Bf16Weight if scheme == "bf16" else QuantWeight
    return kind.from_float(w, scheme, block_size, double_quant, dtype)


class QuantLinear(Linear):
    def __init__(self, weight, bias=None):
        Module.__init__(self)
        if not isinstance(weight, QuantWeight):
            raise TypeError(f"QuantLinear needs a QuantWeight; got {type(weight).__name__}")
        self.in_features, self.out_features = weight.shape
        self.weight, self.bias = weight, bias

    @classmethod
    def from_linear(cls, linear, scheme="nf4", block_size=64, double_quant=True):
        """Quantize a float Linear's weight; its bias Parameter is kept as is."""
        return cls(quantize_weight(linear.weight.data, scheme, block_size, double_quant), linear.bias)

    def forward(self, x):
        return quant_linear(x, self.weight, self.bias)

    def extra_repr(self):
        w = self.weight
        head = f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
        if w.scheme == "bf16":
            return head + "bf16"
        return head + f"{w.scheme}, block_size={w.block_size}, double_quant={w.double_quant}"

