"""Fused layer normalisation over the last axis (GPT-2's LayerNorm, eps 1e-5).

Forward:  x̂ = (x - μ) · r,  r = 1/√(σ² + eps),  y = x̂ · w + b   (μ, σ² over the last axis, size C)
Backward: with d = g · w,   dL/dx = r · (d - mean(d) - x̂ · mean(d · x̂)),
          dL/dw = Σ g · x̂,  dL/db = Σ g   (sums over every axis but the last).
The dx formula comes from differentiating through μ and σ² by hand: one pass instead of the ten
small ops (and ten saved arrays) that composing mean, sub, pow, sqrt and div would need. Rows are
independent, so forward and dx run in threaded row blocks.
"""

from .. import backend
from ..autograd import Tensor


def layer_norm_forward(x, weight, bias, eps):
    """Plain-array forward: returns y and what the backward needs (x̂ and r), in row blocks."""
    xp = backend.xp
    c = x.shape[-1]
    x2 = xp.ascontiguousarray(x).reshape(-1, c)
    xhat, y = xp.empty_like(x2), xp.empty_like(x2)
    rstd = xp.empty((x2.shape[0], 1), dtype=x2.dtype)

    def block(lo, hi):
        xh = xhat[lo:hi]
        xp.subtract(x2[lo:hi], x2[lo:hi].mean(axis=1, keepdims=True), out=xh)
        var = xp.einsum("ij,ij->i", xh, xh)[:, None] / c
        xp.sqrt(var + eps, out=rstd[lo:hi])
        xp.reciprocal(rstd[lo:hi], out=rstd[lo:hi])
        xh *= rstd[lo:hi]
        if weight is not None:
            xp.multiply(xh, weight, out=y[lo:hi])
        else:
            y[lo:hi] = xh
        if bias is not None:
            y[lo:hi] += bias

    backend.parallel_for(x2.shape[0], block, grain=max(1, backend.GRAIN // c))
    return y.reshape(x.shape), xhat.reshape(x.shape), rstd.reshape(x.shape[:-1] + (1,))


def layer_norm_backward(g, xhat, rstd, weight, need_x=True, need_w=True, need_b=True):
    """Plain-array backward: (dL/dx, dL/dw, dL/db) from g = dL/dy; None for what is not needed.

    dx runs in row blocks; dw and db are sums over all rows, done in one pass each so the result
    does not depend on how the rows were split."""
    xp = backend.xp
    c = g.shape[-1]
    g2, xhat2, rstd2 = g.reshape(-1, c), xhat.reshape(-1, c), rstd.reshape(-1, 1)
    dw = xp.einsum("ni,ni->i", g2, xhat2) if need_w else None
    db = g2.sum(axis=0) if need_b else None
    dx = None
    if need_x:
        dx = xp.empty_like(g2)

        def block(lo, hi):
            d = dx[lo:hi]
            if weight is not None:
                xp.multiply(g2[lo:hi], weight, out=d)   # d = g · w, then transformed in place
            else:
                d[...] = g2[lo:hi]
            xh = xhat2[lo:hi]
            mean_d = d.sum(axis=1, keepdims=True) / c
            mean_d_xhat = xp.einsum("ij,ij->i", d, xh)[:, None] / c
            d -= mean_d
            d -= xh * mean_d_xhat
            d *= rstd2[lo:hi]

        backend.parallel_for(g2.shape[0], block, grain=max(1, backend.GRAIN // c))
        dx = dx.reshape(g.shape)
    return dx, dw, db


def layer_norm(x, weight=None, bias=None, eps=1e-5):
    """y = (x - μ)/√(σ² + eps) · w + b over the last axis.   See the module docstring for dL/dx.

    Plain version: ``lora_np.ops.reference.layer_norm``."""
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
