"""The fused LoRA linear op: a frozen affine map plus a trainable low-rank update.

With W (in, out) frozen, A (r, in), B (out, r) (PEFT's layouts), scaling s = α/r and an optional
dropout mask M on the adapter's input:

    X̃ = X ⊙ M/(1-p)          H = X̃ Aᵀ   (N, r)          Y = X W + b + s · H Bᵀ

Backward, from G = dL/dY (N, out):

    dL/dB = s · Gᵀ H                       (out, r)
    dL/dH = s · G B                        (N, r)
    dL/dA = (dL/dH)ᵀ X̃                      (r, in)
    dL/dX = G Wᵀ + ((dL/dH) A) ⊙ M/(1-p)    (N, in)
    dL/dW = Xᵀ G,  dL/db = Σₙ G            only if W, b require grad

With W frozen the backward does two GEMMs of size N·in·out (one forward, one for dX) instead of
three, and four thin ones of size N·r·(in or out); no (in, out) gradient is ever allocated.
"""

from .. import backend
from ..autograd import Tensor
from ..checks import check_probability
from .dropout import dropout_mask
from .linear import check_linear_shapes, linear_backward, linear_forward


def _check_lora_shapes(weight, lora_A, lora_B):
    n_in, n_out = weight.shape
    r = lora_A.shape[0] if lora_A.ndim == 2 else None
    if lora_A.shape != (r, n_in) or lora_B.shape != (n_out, r):
        raise ValueError(f"lora_linear: lora_A {lora_A.shape} and lora_B {lora_B.shape} do not fit weight "
                         f"{weight.shape}; need lora_A (r, {n_in}) and lora_B ({n_out}, r)")
    if not lora_A.dtype == lora_B.dtype == weight.dtype:
        raise TypeError(f"lora_linear: dtypes differ: weight {weight.dtype}, lora_A {lora_A.dtype}, lora_B {lora_B.dtype}")


def lora_linear(x, weight, bias, lora_A, lora_B, scaling, dropout_p=0.0, training=True):
    """y = x·W + b + s·dropout(x)·Aᵀ·Bᵀ, with the hand-derived backward of the module docstring.

    The adapter's products run inside the base GEMM's row blocks (``linear_forward``'s ``extra``),
    so s·H Bᵀ is added to each block of Y, and (dL/dH) A to each block of dX, while it is in cache.
    Plain version: ``lora_np.ops.reference.lora_linear``.
    """
    xp = backend.xp
    check_linear_shapes(x, weight, bias, "lora_linear")
    _check_lora_shapes(weight, lora_A, lora_B)
    p = check_probability("lora_dropout", dropout_p) if training else 0.0
    n_out, r = weight.shape[1], lora_A.shape[0]
    x2 = x.data.reshape(-1, x.shape[-1])
    a, bb = lora_A.data, lora_B.data
    keep = dropout_mask(x2.shape, p) if p > 0.0 else None
    inv_keep = 1.0 / (1.0 - p) if p > 0.0 else 1.0
    xd = x2 if keep is None else x2 * keep * inv_keep   # X̃, the adapter's input
    hs = xp.empty((x2.shape[0], r), dtype=x2.dtype)      # s·H, saved for dL/dB

    def add_adapter(lo, hi, y_block):
        xp.matmul(xd[lo:hi], a.T, out=hs[lo:hi])
        hs[lo:hi] *= scaling
        y_block += hs[lo:hi] @ bb.T

    y = linear_forward(x2, weight.data, None if bias is None else bias.data, extra=add_adapter)
    parents = (x, weight) + (() if bias is None else (bias,)) + (lora_A, lora_B)
    need_x, need_w, need_b = x.requires_grad, weight.requires_grad, bias is not None and bias.requires_grad
    need_a, need_bb = lora_A.requires_grad, lora_B.requires_grad
    w, x_shape, has_bias = weight.data, x.shape, bias is not None
    x_saved = x2 if need_w else None
    xd_saved = xd if need_a else None

    def backward(g):
        g2 = g.reshape(-1, n_out)
        dh = g2 @ bb                                              # dL/dH = s·G B (scaled next)
        dh *= scaling

        def add_adapter_dx(lo, hi, dx_block):
            dx_lora = dh[lo:hi] @ a
            if keep is not None:
                dx_lora *= keep[lo:hi]
                dx_lora *= inv_keep
            dx_block += dx_lora

        dx, dw, db = linear_backward(g2, x_saved, w, need_x, need_w, need_b, extra_dx=add_adapter_dx)
        dB = g2.T @ hs if need_bb else None                       # s·Gᵀ H
        dA = dh.T @ xd_saved if need_a else None                  # (dL/dH)ᵀ X̃
        return ((None if dx is None else dx.reshape(x_shape)), dw) + ((db,) if has_bias else ()) + (dA, dB)

    return Tensor._from_op(y.reshape(*x.shape[:-1], n_out), parents, backward)
