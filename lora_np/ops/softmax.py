"""softmax and log_softmax along an axis, computed stably (the row maximum is subtracted first).

softmax:      y = eˣ / Σ eˣ.       dL/dx = y ⊙ (g - Σ g ⊙ y)    (the Jacobian is diag(y) - y yᵀ)
log_softmax:  y = x - log Σ eˣ.    dL/dx = g - softmax(x) Σ g
"""

from .. import backend
from ..autograd import Tensor


def softmax_array(x, axis=-1, out=None):
    """softmax of a plain array; ``out=x`` computes it in place (attention does, to save memory)."""
    xp = backend.xp
    out = xp.subtract(x, x.max(axis=axis, keepdims=True), out=out)
    xp.exp(out, out=out)
    out *= 1.0 / out.sum(axis=axis, keepdims=True)  # one division per row, then multiplications
    return out


def softmax_backward_array(g, y, axis=-1, out=None):
    """dL/dx = y ⊙ (g - Σ g ⊙ y): the softmax Jacobian-vector product without forming the Jacobian.
    ``out=g`` computes it in place."""
    xp = backend.xp
    out = xp.subtract(g, (g * y).sum(axis=axis, keepdims=True), out=out)
    out *= y
    return out


def softmax(x, axis=-1):
    """y = eˣ / Σ eˣ along ``axis``, the row maximum subtracted first. Its backward is
    ``softmax_backward_array`` (the derivation is there: notebook 01 asks it as an exercise, so the
    public op's help does not give it away)."""
    y = softmax_array(x.data, axis)
    return Tensor._from_op(y, (x,), lambda g: (softmax_backward_array(g, y, axis),))


def log_softmax(x, axis=-1):
    """y = x - log Σ eˣ along ``axis``.   dL/dx = g - eʸ Σ g."""
    xp = backend.xp
    shifted = x.data - x.data.max(axis=axis, keepdims=True)
    y = shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))
    return Tensor._from_op(y, (x,), lambda g: (g - xp.exp(y) * g.sum(axis=axis, keepdims=True),))
