"""LayerNorm over the last axis with learnable scale and shift (GPT-2 uses eps = 1e-5)."""

import numpy as np

from .. import ops
from ..autograd import Parameter
from . import init
from .module import Module


class LayerNorm(Module):
    def __init__(self, normalized_shape, eps=1e-5, bias=True, dtype=np.float32):
        super().__init__()
        self.normalized_shape, self.eps = normalized_shape, eps
        self.weight = Parameter(init.ones((normalized_shape,), dtype))
        self.bias = Parameter(init.zeros((normalized_shape,), dtype)) if bias else None

    def forward(self, x):
        return ops.layer_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}"
