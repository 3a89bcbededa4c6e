"""Fused RMS normalisation over the last axis (Llama's, Qwen's and SmolLM2's RMSNorm).

Layer norm without the mean: no centring, no bias. Per row x of size C:
    r = 1/√(mean(x²) + eps),    x̂ = x r,    y = x̂ ⊙ w
Backward, with d = g ⊙ w = dL/dx̂. From ∂r/∂xⱼ = -½ (mean(x²) + eps)^(-3/2) · 2xⱼ/C = -r³ xⱼ/C:
    ∂x̂ᵢ/∂xⱼ = r δᵢⱼ - r³ xᵢ xⱼ / C = r (δᵢⱼ - x̂ᵢ x̂ⱼ / C)      (symmetric)
so
    dL/dx = r (d - x̂ mean(d ⊙ x̂)),         dL/dw = Σ g ⊙ x̂
(the sum over every axis but the last). It is layer norm's backward with the two mean(d) terms
gone, because nothing was subtracted. Qwen3 also applies it per attention head to q and k: the
last axis is then the head size. The forward keeps x̂ and r; rows are independent, so both kernels
run on blocks of rows (``parallel.for_rows``).
Plain version: ``lora_np.ops.reference.rms_norm``.
"""

from .. import backend, parallel
from ..autograd import Tensor, records_graph


def rms_norm_kernel(y, xhat, r, x, w, eps):
    """On (rows, C): r = 1/√(mean(x²) + eps) (kept), x̂ = x r (kept; ``xhat`` may be ``y`` itself when no
    backward needs x̂), y = x̂ ⊙ w."""
    xp = backend.xp
    mean_x2 = xp.einsum("ij,ij->i", x, x)[:, None] / x.shape[1]
    xp.divide(1.0, xp.sqrt(mean_x2 + eps), out=r)        # r = 1/√(mean(x²) + eps)
    xp.multiply(x, r, out=xhat)                          # x̂ = x r
    xp.multiply(xhat, w, out=y)                          # y = x̂ ⊙ w


def rms_norm_dx_kernel(dx, g, xhat, r, w):
    """On (rows, C): dL/dx = r (d - x̂ mean(d ⊙ x̂)) with d = g ⊙ w."""
    xp = backend.xp
    d = g * w                                            # in the forward y = x̂ ⊙ w, so now dx̂ = d = g ⊙ w
    mean_d_xhat = xp.einsum("ij,ij->i", d, xhat)[:, None] / g.shape[1]   # mean(d ⊙ x̂)
    xp.multiply(xhat, mean_d_xhat, out=dx)               # x̂ = x r and r depends on every x, so now
    xp.subtract(d, dx, out=dx)                           # dx = r (d - x̂ mean(d ⊙ x̂))
    dx *= r


def rms_norm(x, weight, eps=1e-6):
    """y = x / √(mean(x²) + eps) ⊙ w over the last axis.   dL/dx: the module docstring.

    Plain version: ``lora_np.ops.reference.rms_norm``."""
    if weight.shape != (x.shape[-1],):
        raise ValueError(f"rms_norm: weight has shape {weight.shape}, expected ({x.shape[-1]},) for input {x.shape}")
    xp = backend.xp
    shape, c = x.shape, x.shape[-1]
    x2 = xp.ascontiguousarray(x.data).reshape(-1, c)
    w = weight.data
    need_x, need_w = x._requires_grad, weight._requires_grad
    y = xp.empty_like(x2)
    xhat = xp.empty_like(x2) if records_graph(x, weight) else y  # kept for the backward only (else x̂ is made in y)
    r = xp.empty((x2.shape[0], 1), dtype=x2.dtype)
    parallel.for_rows(rms_norm_kernel, (y, xhat, r, x2), (w, eps))

    def backward(g):
        g2 = xp.ascontiguousarray(g).reshape(-1, c)
        dx = None
        if need_x:
            dx = xp.empty(shape, dtype=g2.dtype)  # in x's shape: an array of its own (autograd may add into it)
            parallel.for_rows(rms_norm_dx_kernel, (dx.reshape(-1, c), g2, xhat, r), (w,))
        dw = xp.einsum("ni,ni->i", g2, xhat) if need_w else None
        return dx, dw

    def remake():  # y = x̂ ⊙ w again from the x̂ the backward keeps (autograd.saved_data)
        return xp.multiply(xhat, w).reshape(shape)

    return Tensor._from_op(y.reshape(shape), (x, weight), backward, remake)
