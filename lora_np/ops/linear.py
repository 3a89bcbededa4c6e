"""Fused affine map y = x W + b, with W stored (in, out) as in GPT-2's Conv1D.

Forward:  Y = X W + b                 (X: (N, in) after flattening the leading axes)
Backward: dL/dX = G Wᵀ,  dL/dW = Xᵀ G,  dL/db = Σₙ G
Each of the three is computed only if its input requires grad: a frozen W costs no dW matmul and
no dW buffer, which is where LoRA's savings start (see ``lora_linear.py``).

The kernel runs on blocks of rows (``parallel.for_rows``): each block's GEMM writes about a
megabyte of output, and the bias is added while that block is still in cache.
Plain version: ``lora_np.ops.reference.linear``.
"""

from .. import backend, parallel
from ..autograd import Tensor


def check_linear_shapes(x, weight, bias, op="linear"):
    if weight.ndim != 2 or x.shape[-1] != weight.shape[0]:
        raise ValueError(f"{op}: input of shape {x.shape} does not fit weight of shape {weight.shape} "
                         f"(the input's last axis must equal the weight's first, in_features)")
    if bias is not None and bias.shape != (weight.shape[1],):
        raise ValueError(f"{op}: bias has shape {bias.shape}, expected ({weight.shape[1]},)")
    if x.dtype != weight.dtype:
        raise TypeError(f"{op}: input dtype {x.dtype} differs from weight dtype {weight.dtype}; convert with .astype()")


def row_grain(width):
    """Rows per block: about 1 MB of a (rows, width) float array, and at least 256 rows, since
    thinner blocks cost a BLAS GEMM about a quarter of its rate on GPT-2 small's shapes."""
    return max(256, (1 << 18) // max(width, 1))


def linear_kernel(y, x, w, b):
    """y = x w + b on (rows, in) -> (rows, out)."""
    backend.xp.matmul(x, w, out=y)
    if b is not None:
        y += b


def column_kernel(y_t, w_t, b, x):
    """A slice of output columns, transposed: yᵀ (cols, N) = (x w_tᵀ)ᵀ + b for w_t (cols, K), b (cols,) or None."""
    backend.xp.matmul(x, w_t.T, out=y_t.T)
    if b is not None:
        y_t += b[:, None]


def column_grain(n_columns):
    return max(1, n_columns // parallel.thread_count())


def linear_forward(x2, w, b):
    """Plain arrays: (N, in) @ (in, out) + b. In row blocks; but when W is bigger than X, each thread
    takes a slice of W's columns instead, so that W is read (and packed by BLAS) once, not once per
    row block (GPT-2 small at T 128 × B 4: about 1.4x the GEMM rate). A few rows (generation: one
    token per sequence) make too few blocks to share; BLAS's own threads split that product."""
    if x2.shape[0] < 2 * parallel.thread_count():
        y = backend.xp.matmul(x2, w)
        if b is not None:
            y += b
        return y
    y = backend.xp.empty((x2.shape[0], w.shape[1]), dtype=x2.dtype)
    if w.size > x2.size:
        parallel.for_rows(column_kernel, (y.T, w.T, b), (x2,), grain=column_grain(w.shape[1]))
    else:
        parallel.for_rows(linear_kernel, (y, x2), (w, b), grain=row_grain(w.shape[1]))
    return y


def linear_backward(g2, x2, w, need_x, need_w, need_b):
    """Plain arrays: (dX, dW, db) for flattened g2 = dL/dY (N, out), each only if needed."""
    dx = None
    if need_x:
        dx = backend.xp.empty((g2.shape[0], w.shape[0]), dtype=g2.dtype)
        if w.size > g2.size:  # dXᵀ in slices of W's rows: each thread reads its part of W only
            parallel.for_rows(column_kernel, (dx.T, w, None), (g2,), grain=column_grain(w.shape[0]))
        else:
            parallel.for_rows(parallel.matmul_kernel, (dx, g2), (w.T,), grain=row_grain(w.shape[0]))
    dw = parallel.matmul(x2.T, g2) if need_w else None
    db = g2.sum(axis=0) if need_b else None
    return dx, dw, db


def linear(x, weight, bias=None):
    """y = x W + b for x of shape (..., in), W (in, out), b (out,).   Grads: G Wᵀ, Xᵀ G, Σₙ G.

    Plain version: ``lora_np.ops.reference.linear``."""
    check_linear_shapes(x, weight, bias)
    x2 = x.data.reshape(-1, x.shape[-1])
    w = weight.data
    y = linear_forward(x2, w, None if bias is None else bias.data)
    parents = (x, weight) if bias is None else (x, weight, bias)
    need_x, need_w, need_b = x.requires_grad, weight.requires_grad, bias is not None and bias.requires_grad
    x_shape = x.shape
    x_saved = x2 if need_w else None  # the input is kept only when dL/dW = Xᵀ G needs it
    n_parents = len(parents)

    def backward(g):
        dx, dw, db = linear_backward(g.reshape(-1, w.shape[1]), x_saved, w, need_x, need_w, need_b)
        return (None if dx is None else dx.reshape(x_shape), dw, db)[:n_parents]

    return Tensor._from_op(y.reshape(*x.shape[:-1], weight.shape[1]), parents, backward)
