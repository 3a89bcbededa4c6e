"""Fused layer normalisation over the last axis (GPT-2's LayerNorm, eps 1e-5).

Forward:  x̂ = (x - μ) · r,  r = 1/√(σ² + eps),  y = x̂ · w + b   (μ, σ² over the last axis, size C)
Backward: with d = g · w,   dL/dx = r · (d - mean(d) - x̂ · mean(d · x̂)),
          dL/dw = Σ g · x̂,  dL/db = Σ g   (sums over every axis but the last).
The dx formula comes from differentiating through μ and σ² by hand: one pass instead of the ten
small ops (and ten saved arrays) that composing mean, sub, pow, sqrt and div would need.
"""

from .. import backend
from ..autograd import Tensor


def layer_norm_forward(x, weight, bias, eps):
    """Plain-array forward: returns y and what the backward needs (x̂ and r)."""
    xp = backend.xp
    xhat = x - x.mean(axis=-1, keepdims=True)
    var = xp.einsum("...i,...i->...", xhat, xhat)[..., None] / x.shape[-1]
    rstd = 1.0 / xp.sqrt(var + eps)
    xhat *= rstd
    y = xhat * weight if weight is not None else xhat.copy()
    if bias is not None:
        y += bias
    return y, xhat, rstd


def layer_norm_backward(g, xhat, rstd, weight, need_x=True, need_w=True, need_b=True):
    """Plain-array backward: (dL/dx, dL/dw, dL/db) from g = dL/dy; None for what is not needed."""
    xp = backend.xp
    c = g.shape[-1]
    g2, xhat2 = g.reshape(-1, c), xhat.reshape(-1, c)
    dw = xp.einsum("ni,ni->i", g2, xhat2) if need_w else None
    db = g2.sum(axis=0) if need_b else None
    dx = None
    if need_x:
        dx = g * weight if weight is not None else g.copy()  # d = g · w, then transformed in place
        mean_d = dx.sum(axis=-1, keepdims=True) / c
        mean_d_xhat = xp.einsum("...i,...i->...", dx, xhat)[..., None] / c
        dx -= mean_d
        dx -= xhat * mean_d_xhat
        dx *= rstd
    return dx, dw, db


def layer_norm(x, weight=None, bias=None, eps=1e-5):
    """y = (x - μ)/√(σ² + eps) · w + b over the last axis.   See the module docstring for dL/dx."""
    if weight is not None and weight.shape != (x.shape[-1],):
        raise ValueError(f"layer_norm: weight has shape {weight.shape}, expected ({x.shape[-1]},) for input {x.shape}")
    w = weight.data if weight is not None else None
    b = bias.data if bias is not None else None
    y, xhat, rstd = layer_norm_forward(x.data, w, b, eps)
    parents = tuple(p for p in (x, weight, bias) if p is not None)
    need = [p is not None and p.requires_grad for p in (x, weight, bias)]
    has_w, has_b = weight is not None, bias is not None

    def backward(g):
        dx, dw, db = layer_norm_backward(g, xhat, rstd, w, *need)
        return (dx,) + ((dw,) if has_w else ()) + ((db,) if has_b else ())

    return Tensor._from_op(y, parents, backward)
