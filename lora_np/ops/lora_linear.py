"""The fused LoRA linear op: a frozen affine map plus a trainable low-rank update.

With W (in, out) frozen, A (r, in), B (out, r) (PEFT's layouts), scaling s = α/r and an optional
dropout keep-mask M (probability p of a zero) on the adapter's input:

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

Without dropout (X̃ = X) the adapter folds into the weight: with V = W + s AᵀBᵀ (in, out),

    Y = X V + b            dL/dX = G Vᵀ            (dL/dH = s G B and H are still formed, thin)

one full-size GEMM each instead of a full-size GEMM plus a thin rank-r one (a GEMM with an inner
size of r runs at a fraction of BLAS's rate) and a pass to add it: about 2.5x faster at 128 wide.
V costs in·out·r multiply-adds, so the fold is taken when there are at least as many rows as
inputs (training); with few rows (generation) or with dropout, Y and dL/dX are sums of products,
``parallel.gemm(Y, ((X, W), (sH, Bᵀ)), b)`` and ``parallel.gemm(dX, ((G, Wᵀ), (dL/dH, A)))`` (with
dropout, the mask makes dX's second term a separate pass). V is recomputed in the backward, not
kept: it is as big as W.
Plain version: ``lora_np.ops.reference.lora_linear``.
"""

from .. import backend, parallel
from ..autograd import Tensor, saved_data
from ..checks import check_probability
from .dropout import dropout_mask
from .linear import check_linear_shapes, linear_backward


def check_lora_shapes(weight, lora_A, lora_B):
    n_in, n_out = weight.shape
    r = lora_A.shape[0] if lora_A.ndim == 2 else None
    if lora_A.shape != (r, n_in) or lora_B.shape != (n_out, r):
        raise ValueError(f"lora_linear: lora_A {lora_A.shape} and lora_B {lora_B.shape} do not fit weight "
                         f"{weight.shape}; need lora_A (r, {n_in}) and lora_B ({n_out}, r)")
    if not lora_A.dtype == lora_B.dtype == weight.dtype:
        raise TypeError(f"lora_linear: dtypes differ: weight {weight.dtype}, lora_A {lora_A.dtype}, "
                        f"lora_B {lora_B.dtype}")


def adapted_weight(W, A, B, s):
    """V = W + s AᵀBᵀ (in, out): the weight the adapter makes, X V = X W + s (X Aᵀ) Bᵀ."""
    V = parallel.matmul(A.T, B.T)
    V *= s
    V += W
    return V


def folds(X, W, M):
    """Whether the adapter is folded into V = W + s AᵀBᵀ: no dropout and N ≥ in (module docstring)."""
    return M is None and X.shape[0] >= W.shape[0]


def lora_forward(X, X_tilde, W, b, A, B, s, M):
    """Plain arrays: (Y, sH) with sH = s X̃ Aᵀ (N, r), kept for dL/dB, and Y = X W + (sH) Bᵀ + b."""
    sH = parallel.matmul(X_tilde, A.T)
    sH *= s
    Y = backend.xp.empty((X.shape[0], W.shape[1]), dtype=X.dtype)
    if folds(X, W, M):
        return parallel.gemm(Y, ((X, adapted_weight(W, A, B, s)),), b), sH
    return parallel.gemm(Y, ((X, W), (sH, B.T)), b), sH


def lora_dx(G, dH, W, A, B, s, M, p):
    """Plain arrays: dL/dX = G Wᵀ + ((dL/dH) A) ⊙ M/(1-p), for a keep-mask M (or None: no dropout);
    = G Vᵀ when the adapter is folded."""
    dX = backend.xp.empty((G.shape[0], W.shape[0]), dtype=G.dtype)
    if folds(G, W, M):
        return parallel.gemm(dX, ((G, adapted_weight(W, A, B, s).T),))
    if M is None:
        return parallel.gemm(dX, ((G, W.T), (dH, A)))
    parallel.gemm(dX, ((G, W.T),))
    dX_adapter = parallel.matmul(dH, A)
    dX_adapter *= M
    dX_adapter *= 1.0 / (1.0 - p)
    dX += dX_adapter
    return dX


def lora_linear(x, weight, bias, lora_A, lora_B, scaling, dropout_p=0.0, training=True):
    """y = x W + b + s (dropout(x) Aᵀ) Bᵀ, with the hand-derived backward of the module docstring.

    Plain version: ``lora_np.ops.reference.lora_linear``.
    """
    check_linear_shapes(x, weight, bias, "lora_linear")
    check_lora_shapes(weight, lora_A, lora_B)
    p = check_probability("lora_dropout", dropout_p) if training else 0.0
    s, n_out = scaling, weight.shape[1]
    X = x.data.reshape(-1, x.shape[-1])
    W, A, B = weight.data, lora_A.data, lora_B.data
    M = dropout_mask(X.shape, p) if p > 0.0 else None
    X_tilde = X if M is None else X * M * (1.0 / (1.0 - p))   # the adapter's input
    Y, sH = lora_forward(X, X_tilde, W, None if bias is None else bias.data, A, B, s, M)
    parents = (x, weight) + (() if bias is None else (bias,)) + (lora_A, lora_B)
    need_x, need_w, need_b = x.requires_grad, weight.requires_grad, bias is not None and bias.requires_grad
    need_A, need_B = lora_A.requires_grad, lora_B.requires_grad
    x_shape, has_bias = x.shape, bias is not None
    X_saved = X if need_w else None
    # dL/dA needs X̃: without dropout it is X, which its producer may remake (autograd.saved_data) rather than
    # this op keeping it
    keep_X_tilde = (saved_data(x) if M is None else lambda: X_tilde) if need_A else None

    def backward(g):
        G = g.reshape(-1, n_out)
        dH = parallel.matmul(G, B)                                 # dL/dH = s G B (scaled next)
        dH *= s
        dX = lora_dx(G, dH, W, A, B, s, M, p).reshape(x_shape) if need_x else None
        _, dW, db = linear_backward(G, X_saved, W, False, need_w, need_b)
        dB = parallel.matmul(G.T, sH) if need_B else None          # s Gᵀ H
        dA = parallel.matmul(dH.T, keep_X_tilde().reshape(dH.shape[0], -1)) if need_A else None  # (dL/dH)ᵀ X̃
        return (dX, dW) + ((db,) if has_bias else ()) + (dA, dB)

    return Tensor._from_op(Y.reshape(*x.shape[:-1], n_out), parents, backward)
