"""LoraLinear: a frozen Linear plus named low-rank adapters, one of them active.

The base ``weight`` and ``bias`` keep their Parameters and their names, so the model's GPT-2 state
dict is unchanged; each adapter adds ``lora_A.<name>.weight`` (r, in) and ``lora_B.<name>.weight``
(out, r), PEFT's names and layouts. The forward is one fused op (``ops/lora_linear.py``).
"""

from .. import ops
from ..autograd import Parameter
from ..nn import Linear, Module, ModuleDict, init


class LoraFactor(Module):
    """One low-rank factor: a module holding ``weight``, so names read ``lora_A.default.weight``."""

    def __init__(self, weight):
        super().__init__()
        self.weight = Parameter(weight)


class LoraLinear(Module):
    def __init__(self, base):
        super().__init__()
        if not isinstance(base, Linear):
            raise TypeError(f"LoraLinear wraps a Linear; got {type(base).__name__}")
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        self.lora_A, self.lora_B = ModuleDict(), ModuleDict()
        self.scaling, self.lora_dropout = {}, {}
        self.active_adapter = None
        self.merged_adapter = None
        self.disabled = False

    def add_adapter(self, name, config):
        """A = Kaiming-uniform (as nn.Linear, as PEFT), B = 0: the adapted layer equals the base at step 0."""
        dtype = self.weight.dtype
        self.lora_A[name] = LoraFactor(init.kaiming_uniform((config.r, self.in_features), self.in_features, dtype))
        self.lora_B[name] = LoraFactor(init.zeros((self.out_features, config.r), dtype))
        self.scaling[name] = config.scaling
        self.lora_dropout[name] = config.lora_dropout

    def delete_adapter(self, name):
        del self.lora_A[name], self.lora_B[name]
        del self.scaling[name], self.lora_dropout[name]

    def delta_weight(self, name):
        """ΔW = s · Aᵀ Bᵀ in the (in, out) layout of W."""
        return self.scaling[name] * (self.lora_A[name].weight.data.T @ self.lora_B[name].weight.data.T)

    def merge(self):
        if self.merged_adapter is None and self.active_adapter is not None:
            self.weight.data = self.weight.data + self.delta_weight(self.active_adapter)
            self.merged_adapter = self.active_adapter

    def unmerge(self):
        if self.merged_adapter is not None:
            self.weight.data = self.weight.data - self.delta_weight(self.merged_adapter)
            self.merged_adapter = None

    def to_linear(self):
        """A plain Linear holding this layer's weight (merged or not) and bias."""
        plain = Linear.__new__(Linear)
        Module.__init__(plain)
        plain.in_features, plain.out_features = self.in_features, self.out_features
        plain.weight, plain.bias = self.weight, self.bias
        return plain

    def forward(self, x):
        name = self.active_adapter
        if name is None or self.disabled or self.merged_adapter is not None:
            return ops.linear(x, self.weight, self.bias)
        return ops.lora_linear(x, self.weight, self.bias, self.lora_A[name].weight, self.lora_B[name].weight,
                               self.scaling[name], self.lora_dropout[name], self.training)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, adapters={self.lora_A.keys()}, "
                f"active={self.active_adapter!r}{', merged' if self.merged_adapter else ''}")

