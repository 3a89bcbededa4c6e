"""Inverted dropout: zero each element with probability p, scale the survivors by 1/(1-p).

y = x ⊙ m / (1-p) with a random 0/1 mask m; the expected value of y is x, so evaluation (no
dropout) needs no rescaling. The mask is kept for the backward:  dL/dx = g ⊙ m / (1-p).
"""

from .. import backend, checks
from ..autograd import Tensor


def dropout_mask(shape, p):
    """A boolean keep-mask (True with probability 1-p) from the backend's generator."""
    return backend.rng().random(shape, dtype=backend.xp.float32) >= p


def dropout(x, p=0.1, training=True):
    """y = x ⊙ m / (1-p) in training, y = x otherwise.   dL/dx = g ⊙ m / (1-p)."""
    p = checks.check_probability("dropout p", p)
    if not training or p == 0.0:
        return x
    mask = dropout_mask(x.shape, p)
    scale = 1.0 / (1.0 - p)
    y = x.data * mask
    y *= scale
    return Tensor._from_op(y, (x,), lambda g: (g * mask * scale,))
