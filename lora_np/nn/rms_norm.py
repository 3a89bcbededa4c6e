"""RMSNorm (Llama, Qwen, SmolLM2): y = x / √(mean(x²) + eps) ⊙ weight over the last axis, no bias."""

import numpy as np

from .. import ops
from ..autograd import Parameter
from . import init
from .module import Module


class RMSNorm(Module):
    def __init__(self, normalized_shape, eps=1e-6, dtype=np.float32):
        super().__init__()
        self.normalized_shape, self.eps = normalized_shape, eps
        self.weight = Parameter(init.ones((normalized_shape,), dtype))

    def forward(self, x):
        return ops.rms_norm(x, self.weight, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}"
