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

The backward is one hand-off to the threads: dX's (and dW's) blocks with the thin products beside
them (``lora_backward``); the forward, folded, runs s X̃ Aᵀ beside Y's blocks.
Plain version: ``lora_np.ops.reference.lora_linear``.
"""

from functools import partial

from .. import backend, parallel
from ..autograd import Tensor, saved_data
from ..checks import check_probability
from .dropout import dropout_mask
from .linear import check_linear_shapes, linear_backward_tasks


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


def scaled_product(out, a, b, s):
    """out = s · a b: a thin product (one side r wide) as one BLAS call, scaled in place."""
    parallel.gemm_kernel(out, ((a, b),), None)
    out *= s


def lora_forward(X, X_tilde, W, b, A, B, s, M):
    """Plain arrays: (Y, sH) with sH = s X̃ Aᵀ (N, r), kept for dL/dB, and Y = X W + (sH) Bᵀ + b.
    Folded, Y does not need sH: its thin product runs beside Y's blocks, in the same hand-off."""
    xp = backend.xp
    Y = xp.empty((X.shape[0], W.shape[1]), dtype=X.dtype)
    sH = xp.empty((X.shape[0], A.shape[0]), dtype=X.dtype)
    if folds(X, W, M):
        parallel.run_tasks([*parallel.gemm_tasks(Y, ((X, adapted_weight(W, A, B, s)),), b),
                            partial(scaled_product, sH, X_tilde, A.T, s)], size=X.size + Y.size)
        return Y, sH
    parallel.gemm(sH, ((X_tilde, A.T),))
    sH *= s
    return parallel.gemm(Y, ((X, W), (sH, B.T)), b), sH


def adapter_grads_A(dA, dH, G, B, X_tilde, s):
    """dL/dH = s G B into dH, then dL/dA = (dL/dH)ᵀ X̃ into dA: two thin products, one task."""
    scaled_product(dH, G, B, s)
    parallel.gemm_kernel(dA, ((dH.T, X_tilde),), None)


def lora_backward(G, X, X_tilde, W, A, B, sH, s, M, p, need_x, need_w, need_b, need_A, need_B, x_shape):
    """Plain arrays: (dL/dX, dL/dW, dL/db, dL/dA, dL/dB) of the module docstring, each only if needed,
    for G = dL/dY (N, out), X the input (None unless W is trained) and X̃ the adapter's input (None
    unless A is trained). All of it is one hand-off to the threads (``parallel.run_tasks``): dW's and
    dX's blocks, db, dL/dB = Gᵀ(sH), and dL/dH = s G B followed by dL/dA = (dL/dH)ᵀX̃ as one task. Only
    unfolded does dX need dL/dH (dX = G Wᵀ + (dL/dH) A), which then comes first; with dropout, dX's
    masked adapter term is a pass after the hand-off. dL/dX is allocated in ``x_shape``, the input's
    (an array of its own: ``linear_backward_tasks``)."""
    xp = backend.xp
    n_rows, n_in = G.shape[0], W.shape[0]
    _, dW, db, tasks = linear_backward_tasks(G, X, W, False, need_w, need_b)
    dX = xp.empty(x_shape, dtype=G.dtype) if need_x else None
    dX2 = None if dX is None else dX.reshape(n_rows, n_in)
    dA = xp.empty(A.shape, dtype=G.dtype) if need_A else None
    dB = xp.empty(B.shape, dtype=G.dtype) if need_B else None
    dH = xp.empty((n_rows, A.shape[0]), dtype=G.dtype) if need_x or need_A else None
    thin = []
    if need_x and not folds(G, W, M):
        parallel.gemm(dH, ((G, B),))  # dL/dH first: dX's adapter term needs it
        dH *= s
        dx_tasks = parallel.gemm_tasks(dX2, ((G, W.T),) if M is not None else ((G, W.T), (dH, A)))
        if need_A:
            thin.append(partial(parallel.gemm_kernel, dA, ((dH.T, X_tilde),), None))
    else:
        dx_tasks = parallel.gemm_tasks(dX2, ((G, adapted_weight(W, A, B, s).T),)) if need_x else []
        if need_A:
            thin.append(partial(adapter_grads_A, dA, dH, G, B, X_tilde, s))
    if need_B:
        thin.append(partial(parallel.gemm_kernel, dB, ((G.T, sH),), None))
    parallel.run_tasks(tasks + dx_tasks + thin, size=G.size + n_rows * n_in)
    if need_x and M is not None:
        dX_adapter = parallel.matmul(dH, A)
        dX_adapter *= M
        dX_adapter *= 1.0 / (1.0 - p)
        dX2 += dX_adapter
    return dX, dW, db, dA, dB


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
        X_tilde = keep_X_tilde().reshape(G.shape[0], -1) if need_A else None
        dX, dW, db, dA, dB = lora_backward(G, X_saved, X_tilde, W, A, B, sH, s, M, p,
                                           need_x, need_w, need_b, need_A, need_B, x_shape)
        return (dX, dW) + ((db,) if has_bias else ()) + (dA, dB)

    return Tensor._from_op(Y.reshape(*x.shape[:-1], n_out), parents, backward)
