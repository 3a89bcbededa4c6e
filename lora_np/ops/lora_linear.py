"""The fused LoRA linear op: a frozen affine map plus a trainable low-rank update.

With W (in, out) frozen, A (r, in), B (out, r) (PEFT's layouts), scaling s = α/r and an optional
dropout mask M on the adapter's input:

    X̃ = X ⊙ M/(1-p)          H = X̃ Aᵀ   (N, r)          Y = X W + b + s H Bᵀ

so the update to the weight is ΔW = s AᵀBᵀ (in, out). Backward, from G = dL/dY (N, out):

    dL/dB = s Gᵀ H                         (out, r)
    dL/dH = s G B                          (N, r)
    dL/dA = (dL/dH)ᵀ X̃                      (r, in)
    dL/dX = G Wᵀ + ((dL/dH) A) ⊙ M/(1-p)    (N, in)
    dL/dW = Xᵀ G,  dL/db = Σₙ G            only if W, b require grad

With W frozen, the backward skips Xᵀ G, the one full-size (in, out) product that only W needs:
the full-size products are X W (forward) and G Wᵀ (dX), and everything the adapter adds is thin,
of size N·r·(in or out). No (in, out) gradient is ever allocated.

Both kernels run on blocks of rows (``parallel.for_rows``), so the adapter's thin products are
added to each block of Y (and of dX) while that block is still in cache.
Plain version: ``lora_np.ops.reference.lora_linear``.
"""

from .. import backend, parallel
from ..autograd import Tensor
from ..checks import check_probability
from .dropout import dropout_mask
from .linear import check_linear_shapes, column_grain, linear_backward, linear_kernel, row_grain


def check_lora_shapes(weight, lora_A, lora_B):
    n_in, n_out = weight.shape
    r = lora_A.shape[0] if lora_A.ndim == 2 else None
    if lora_A.shape != (r, n_in) or lora_B.shape != (n_out, r):
        raise ValueError(f"lora_linear: lora_A {lora_A.shape} and lora_B {lora_B.shape} do not fit weight "
                         f"{weight.shape}; need lora_A (r, {n_in}) and lora_B ({n_out}, r)")
    if not lora_A.dtype == lora_B.dtype == weight.dtype:
        raise TypeError(f"lora_linear: dtypes differ: weight {weight.dtype}, lora_A {lora_A.dtype}, lora_B {lora_B.dtype}")


def lora_kernel(y, hs, x, xd, w, b, a, bb, scaling):
    """y = x W + b + s (x̃ Aᵀ) Bᵀ on a block of rows; s H = s x̃ Aᵀ is kept (hs) for dL/dB."""
    linear_kernel(y, x, w, b)
    backend.xp.matmul(xd, a.T, out=hs)
    hs *= scaling
    y += hs @ bb.T


def lora_dx_kernel(dx, g, dh, keep, w, a, inv_keep):
    """dL/dX = G Wᵀ + ((dL/dH) A) ⊙ M/(1-p) on a block of rows."""
    backend.xp.matmul(g, w.T, out=dx)
    dx_lora = dh @ a
    if keep is not None:
        dx_lora *= keep
        dx_lora *= inv_keep
    dx += dx_lora


def lora_dx_columns_kernel(dx_t, w_s, a_t, keep_t, g, dh, inv_keep):
    """The same for a slice of dX's columns (of W's rows), transposed, so that each thread reads
    only its part of W: dXᵀ = (G W_sᵀ + ((dL/dH) A_s) ⊙ M/(1-p))ᵀ."""
    backend.xp.matmul(g, w_s.T, out=dx_t.T)
    dx_lora = dh @ a_t.T
    if keep_t is not None:
        dx_lora *= keep_t.T
        dx_lora *= inv_keep
    dx_t += dx_lora.T


def lora_linear(x, weight, bias, lora_A, lora_B, scaling, dropout_p=0.0, training=True):
    """y = x W + b + s (dropout(x) Aᵀ) Bᵀ, with the hand-derived backward of the module docstring.

    Plain version: ``lora_np.ops.reference.lora_linear``.
    """
    xp = backend.xp
    check_linear_shapes(x, weight, bias, "lora_linear")
    check_lora_shapes(weight, lora_A, lora_B)
    p = check_probability("lora_dropout", dropout_p) if training else 0.0
    n_out, r = weight.shape[1], lora_A.shape[0]
    x2 = x.data.reshape(-1, x.shape[-1])
    w, a, bb = weight.data, lora_A.data, lora_B.data
    keep = dropout_mask(x2.shape, p) if p > 0.0 else None
    inv_keep = 1.0 / (1.0 - p)
    xd = x2 if keep is None else x2 * keep * inv_keep   # X̃, the adapter's input
    y = xp.empty((x2.shape[0], n_out), dtype=x2.dtype)
    hs = xp.empty((x2.shape[0], r), dtype=x2.dtype)      # s H, saved for dL/dB
    parallel.for_rows(lora_kernel, (y, hs, x2, xd), (w, None if bias is None else bias.data, a, bb, scaling),
                      grain=row_grain(n_out))
    parents = (x, weight) + (() if bias is None else (bias,)) + (lora_A, lora_B)
    need_x, need_w, need_b = x.requires_grad, weight.requires_grad, bias is not None and bias.requires_grad
    need_a, need_bb = lora_A.requires_grad, lora_B.requires_grad
    x_shape, has_bias = x.shape, bias is not None
    x_saved = x2 if need_w else None
    xd_saved = xd if need_a else None

    def backward(g):
        g2 = g.reshape(-1, n_out)
        dh = parallel.matmul(g2, bb)                              # dL/dH = s G B (scaled next)
        dh *= scaling
        dx = None
        if need_x:
            dx = xp.empty((g2.shape[0], x_shape[-1]), dtype=g2.dtype)
            if w.size > g2.size:  # a weight bigger than the gradient: slices of W's rows (see linear_forward)
                parallel.for_rows(lora_dx_columns_kernel, (dx.T, w, a.T, None if keep is None else keep.T),
                                  (g2, dh, inv_keep), grain=column_grain(w.shape[0]))
            else:
                parallel.for_rows(lora_dx_kernel, (dx, g2, dh, keep), (w, a, inv_keep), grain=row_grain(x_shape[-1]))
        _, dw, db = linear_backward(g2, x_saved, w, False, need_w, need_b)
        dB = parallel.matmul(g2.T, hs) if need_bb else None      # s Gᵀ H
        dA = parallel.matmul(dh.T, xd_saved) if need_a else None  # (dL/dH)ᵀ X̃
        return ((None if dx is None else dx.reshape(x_shape)), dw) + ((db,) if has_bias else ()) + (dA, dB)

    return Tensor._from_op(y.reshape(*x.shape[:-1], n_out), parents, backward)
