"""Fused affine map y = x W + b, with W stored (in, out) as in GPT-2's Conv1D.

Forward:  Y = X W + b                 (X: (N, in) after flattening the leading axes)
Backward: dL/dX = G Wᵀ,  dL/dW = Xᵀ G,  dL/db = Σₙ G
Each of the three is computed only if its input requires grad: a frozen W costs no dW matmul and
no dW buffer, which is where LoRA's savings start (see ``lora_linear.py``).

Each product is one ``parallel.gemm``: it splits the work (or not) by size, and adds the bias to
each block of Y while that block is still in cache. The backward's dX, dW and db go to the threads
in one hand-off (``parallel.run_tasks``): dW's and dX's blocks, then the bias sum beside them.
Plain version: ``lora_np.ops.reference.linear``.
"""

from functools import partial

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


def linear_forward(X, W, b):
    """Plain arrays: Y = X W + b for X (N, in), W (in, out), b (out,) or None."""
    return parallel.gemm(backend.xp.empty((X.shape[0], W.shape[1]), dtype=X.dtype), ((X, W),), b)


def column_sum(a, out=None):
    """Σ over the rows of a 2-D array (a bias gradient), as a GEMV with a vector of ones: BLAS's
    column sums take about 0.6 of the time of NumPy's reduction over the first axis at (2048, 128-512)."""
    return backend.xp.matmul(backend.xp.ones(a.shape[0], dtype=a.dtype), a, out=out)


def linear_backward_tasks(G, X, W, need_x, need_w, need_b, x_shape=None):
    """Plain arrays: (dL/dX = G Wᵀ, dL/dW = Xᵀ G, dL/db = Σₙ G) for G = dL/dY (N, out), each only if
    needed, allocated, and the tasks that fill them (dW's blocks, dX's blocks, then the bias sum) for
    one ``parallel.run_tasks``, with more work of the caller's beside them if it has some. dX is
    allocated in ``x_shape`` if given (the input's shape: an array of its own, not a reshaped view,
    so that autograd may add another gradient of x into it in place)."""
    xp = backend.xp
    dX = xp.empty(x_shape or (G.shape[0], W.shape[0]), dtype=G.dtype) if need_x else None
    dX2 = None if dX is None else dX.reshape(G.shape[0], W.shape[0])
    dW = xp.empty(W.shape, dtype=G.dtype) if need_w else None
    db = xp.empty(G.shape[1], dtype=G.dtype) if need_b else None
    tasks = [*(parallel.gemm_tasks(dW, ((X.T, G),)) if need_w else ()),
             *(parallel.gemm_tasks(dX2, ((G, W.T),)) if need_x else ()),
             *((partial(column_sum, G, out=db),) if need_b else ())]
    return dX, dW, db, tasks


def linear(x, weight, bias=None):
    """y = x W + b for x of shape (..., in), W (in, out), b (out,).   Grads: G Wᵀ, Xᵀ G, Σₙ G.

    Plain version: ``lora_np.ops.reference.linear``."""
    xd, w, b = x.data, weight.data, None if bias is None else bias.data
    check_linear_shapes(xd, w, b)  # (on the arrays: a Tensor's shape is one more lookup, and this runs per token)
    x_shape = xd.shape
    x2 = xd.reshape(-1, x_shape[-1])
    y = linear_forward(x2, w, b).reshape(x_shape[:-1] + (w.shape[1],))
    parents = (x, weight) if bias is None else (x, weight, bias)
    need_x, need_w, need_b = x._requires_grad, weight._requires_grad, bias is not None and bias._requires_grad
    x_saved = x2 if need_w else None  # the input is kept only when dL/dW = Xᵀ G needs it
    n_parents = len(parents)

    def backward(g):
        dx, dw, db, tasks = linear_backward_tasks(g.reshape(-1, w.shape[1]), x_saved, w, need_x, need_w, need_b,
                                                  x_shape)
        parallel.run_tasks(tasks)
        return (dx, dw, db)[:n_parents]

    return Tensor._from_op(y, parents, backward)
