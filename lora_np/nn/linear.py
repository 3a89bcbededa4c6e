"""Linear layer in GPT-2's Conv1D layout: ``weight`` is (in_features, out_features), y = x W + b."""

import numpy as np

from .. import ops
from ..autograd import Parameter
from . import init
from .module import Module


class Linear(Module):
    def __init__(self, in_features, out_features, bias=True, std=0.02, dtype=np.float32):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(init.normal((in_features, out_features), std, dtype))
        self.bias = Parameter(init.zeros((out_features,), dtype)) if bias else None

    @classmethod
    def from_parameters(cls, weight, bias=None):
        """A Linear around existing parameters, weight (in, out) and bias (out,) or None: e.g. the
        plain layer left when an adapter is removed (nothing is drawn or copied)."""
        layer = cls(*weight.shape, bias=False, std=None, dtype=weight.dtype)
        layer.weight, layer.bias = weight, bias
        return layer

    def forward(self, x):
        return ops.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
