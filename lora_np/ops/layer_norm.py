"""Fused layer normalisation over the last axis (GPT-2's LayerNorm, eps 1e-5).

Forward, per row x of size C:
    μ = mean(x),  σ² = mean((x - μ)²),  r = 1/√(σ² + eps),  x̂ = (x - μ) r,  y = x̂ ⊙ w + b
Backward, with d = g ⊙ w = dL/dx̂. The Jacobian of x̂ with respect to x (1 = the all-ones vector):
    ∂x̂/∂x = r (I - 11ᵀ/C - x̂ x̂ᵀ/C)          (from ∂μ/∂x = 1ᵀ/C and ∂r/∂x = -r² x̂ᵀ/C)
and it is symmetric, so
    dL/dx = r (d - mean(d) - x̂ mean(d ⊙ x̂)),     dL/dw = Σ g ⊙ x̂,  dL/db = Σ g
(the sums over every axis but the last). One pass instead of the ten small ops (and ten saved
arrays) that composing mean, sub, pow, sqrt and div would need. Rows are independent, so the
forward and dx kernels run on blocks of rows (``parallel.for_rows``); the backward hands dx's blocks and
the two parameter sums beside them to the threads at once (``parallel.run_tasks``). y is not kept beside
x̂: a consumer that needs it for its own backward (GPT-2's c_attn / c_fc LoRA adapters, for dL/dA) gets
it again as x̂ ⊙ w + b, the same two operations, the same bits (``autograd.saved_data``).
Plain version: ``lora_np.ops.reference.layer_norm``.
"""

from functools import partial

from .. import backend, parallel
from ..autograd import Tensor
from .linear import column_sum


def row_mean(a):
    """mean(a) over each row (rows, 1), as a GEMV with a vector of 1/C: BLAS's row sums beat
    NumPy's reductions along a short last axis about fivefold."""
    return (a @ backend.xp.full(a.shape[1], 1.0 / a.shape[1], dtype=a.dtype))[:, None]


def product_column_sum(out, a, b):
    """out = Σ over the rows of a ⊙ b (a layer norm's dL/dw = Σ g ⊙ x̂), one pass."""
    out[...] = backend.xp.einsum("ni,ni->i", a, b)


def layer_norm_kernel(y, xhat, rstd, x, w, b, eps):
    """On (rows, C): x̂ = (x - μ) r with r = 1/√(σ² + eps) (kept, for the backward), y = x̂ ⊙ w + b."""
    xp = backend.xp
    xp.subtract(x, row_mean(x), out=xhat)                # x - μ, in x̂ until x̂ is written
    xp.multiply(xhat, xhat, out=y)                       # (x - μ)², in y until y is written
    xp.divide(1.0, xp.sqrt(row_mean(y) + eps), out=rstd)  # r = 1/√(σ² + eps), σ² = mean((x - μ)²)
    xhat *= rstd                                         # x̂ = (x - μ) r
    scale_shift(y, xhat, w, b)


def scale_shift(y, xhat, w, b):
    """y = x̂ ⊙ w + b (w, b: None for none)."""
    if w is None:
        y[...] = xhat
    else:
        backend.xp.multiply(xhat, w, out=y)              # y = x̂ ⊙ w
    if b is not None:
        y += b                                           #     + b


def layer_norm_dx_kernel(dx, g, xhat, rstd, w):
    """On (rows, C): dL/dx = r (d - mean(d) - x̂ mean(d ⊙ x̂)) with d = g ⊙ w."""
    xp = backend.xp
    d = g if w is None else g * w                        # in the forward y = x̂ ⊙ w + b, so now dx̂ = d = g ⊙ w
    xp.multiply(d, xhat, out=dx)                         # d ⊙ x̂, in dx until dx is written
    mean_d_xhat = row_mean(dx)
    xp.subtract(d, row_mean(d), out=dx)                  # x̂ = (x - μ) r, μ and r depend on every x: so
    dx -= xhat * mean_d_xhat                             # dx = r (d - mean(d) - x̂ mean(d ⊙ x̂))
    dx *= rstd


def layer_norm(x, weight=None, bias=None, eps=1e-5):
    """y = (x - μ)/√(σ² + eps) ⊙ w + b over the last axis.   dL/dx: the module docstring.

    Plain version: ``lora_np.ops.reference.layer_norm``."""
    if weight is not None and weight.shape != (x.shape[-1],):
        raise ValueError(f"layer_norm: weight has shape {weight.shape}, expected ({x.shape[-1]},) for input {x.shape}")
    xp = backend.xp
    w = weight.data if weight is not None else None
    b = bias.data if bias is not None else None
    shape, c = x.shape, x.shape[-1]
    x2 = xp.ascontiguousarray(x.data).reshape(-1, c)
    y, xhat = xp.empty_like(x2), xp.empty_like(x2)
    rstd = xp.empty((x2.shape[0], 1), dtype=x2.dtype)
    parallel.for_rows(layer_norm_kernel, (y, xhat, rstd, x2), (w, b, eps))
    parents = tuple(p for p in (x, weight, bias) if p is not None)
    need_x, need_w, need_b = (p is not None and p.requires_grad for p in (x, weight, bias))
    has_w, has_b = weight is not None, bias is not None

    def backward(g):
        g2 = g.reshape(-1, c)
        dx = xp.empty(shape, dtype=g2.dtype) if need_x else None  # in x's shape: an array of its own, which
        dx2 = None if dx is None else dx.reshape(-1, c)          # autograd may sum a residual's gradient into
        dw = xp.empty(c, dtype=g2.dtype) if need_w else None  # y = x̂ ⊙ w + b: dw = Σ g ⊙ x̂, db = Σ g,
        db = xp.empty(c, dtype=g2.dtype) if need_b else None  # over all rows, one pass each
        parallel.run_tasks([*(parallel.row_tasks(layer_norm_dx_kernel, (dx2, g2, xhat, rstd), (w,)) if need_x else ()),
                            *((partial(product_column_sum, dw, g2, xhat),) if need_w else ()),
                            *((partial(column_sum, g2, out=db),) if need_b else ())])
        return (dx,) + ((dw,) if has_w else ()) + ((db,) if has_b else ())

    def remake():  # y = x̂ ⊙ w + b again from the x̂ the backward keeps (autograd.saved_data)
        y_again = xp.empty_like(xhat)
        scale_shift(y_again, xhat, w, b)
        return y_again.reshape(shape)

    return Tensor._from_op(y.reshape(shape), parents, backward, remake)
