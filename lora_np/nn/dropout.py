"""Dropout as a module: active in train() mode, the identity in eval() mode."""

from .. import ops
from ..checks import check_probability
from .module import Module


class Dropout(Module):
    def __init__(self, p=0.1):
        super().__init__()
        self.p = check_probability("Dropout p", p)

    def forward(self, x):
        return ops.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"
