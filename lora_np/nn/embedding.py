"""Embedding table: row i of ``weight`` (num_embeddings, embedding_dim) is the vector of token i."""

import numpy as np

from .. import ops
from ..autograd import Parameter
from . import init
from .module import Module


class Embedding(Module):
    def __init__(self, num_embeddings, embedding_dim, std=0.02, dtype=np.float32):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.weight = Parameter(init.normal((num_embeddings, embedding_dim), std, dtype))

    @classmethod
    def from_weight(cls, weight):
        """An Embedding around an existing (num_embeddings, embedding_dim) weight (nothing drawn or copied)."""
        layer = cls(*weight.shape, std=None, dtype=weight.dtype)
        layer.weight = weight
        return layer

    def forward(self, idx):
        return ops.embedding(idx, self.weight)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}"
