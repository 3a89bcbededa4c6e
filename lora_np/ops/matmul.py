"""Matrix product, batched, with NumPy's broadcasting of the batch axes.

For Y = A B (last two axes), dL/dA = G Bᵀ and dL/dB = Aᵀ G; each is then summed over the batch
axes along which its input was broadcast. A stack of rows times one matrix, (..., n) @ (n, m), is
computed as a single (N, n) @ (n, m) product, the shape BLAS is fastest at.
"""

from .. import parallel
from ..autograd import Tensor, saved_data
from .broadcast import broadcast_shape, unbroadcast


def _swap(x):
    return x.swapaxes(-1, -2)


def _check_shapes(a_shape, b_shape):
    if len(a_shape) == 0 or len(b_shape) == 0:
        raise ValueError(f"matmul: operands must have at least one axis; got shapes {a_shape} and {b_shape}")
    k_a = a_shape[-1]
    k_b = b_shape[-2] if len(b_shape) > 1 else b_shape[0]
    if k_a != k_b:
        raise ValueError(f"matmul: shapes {a_shape} and {b_shape} do not align: "
                         f"last axis of a is {k_a}, "
                         f"{'first' if len(b_shape) == 1 else 'second-to-last'} axis of b is {k_b}")
    if len(a_shape) > 2 and len(b_shape) > 2:
        try:
            broadcast_shape(a_shape[:-2], b_shape[:-2], "matmul")
        except ValueError:
            raise ValueError(f"matmul: the batch axes of shapes {a_shape} and {b_shape} "
                             f"cannot be broadcast together") from None


def _matmul_nd(a, b):
    """Y = A B for a (..., k) and b (k, m) or stacks of matrices with broadcast batch axes."""
    if b.ndim == 2 and a.ndim >= 2:
        return parallel.matmul(a.reshape(-1, a.shape[-1]), b).reshape(*a.shape[:-1], b.shape[-1])
    return parallel.matmul(a, b)


def _grad_b(a, g, b_shape):
    """dL/dB = Aᵀ G summed over broadcast batch axes (one big GEMM when B is a single matrix)."""
    if len(b_shape) == 2 and a.ndim >= 2:
        return parallel.matmul(a.reshape(-1, a.shape[-1]).T, g.reshape(-1, g.shape[-1]))
    return unbroadcast(parallel.matmul(_swap(a), g), b_shape)


def matmul(a, b):
    """Y = A @ B.   dL/dA = G Bᵀ,  dL/dB = Aᵀ G  (over the last two axes; batch axes summed back)."""
    a, b = _operands(a, b)
    a_data = a.data[None, :] if a.ndim == 1 else a.data  # a vector is a 1-row matrix
    b_data = b.data[:, None] if b.ndim == 1 else b.data  # ... or a 1-column matrix
    a_data_shape, b_data_shape = a_data.shape, b_data.shape
    y = _matmul_nd(a_data, b_data)
    out_shape = y.shape[:-2] + (y.shape[-2],) * (a.ndim > 1) + (y.shape[-1],) * (b.ndim > 1)
    y_shape, a_shape, b_shape = y.shape, a.shape, b.shape
    keep_a = saved_data(a) if b.requires_grad else None  # dL/dB needs A (its producer may remake it); dL/dA needs B
    b_saved = b_data if a.requires_grad else None

    def backward(g):
        g = g.reshape(y_shape)
        ga = None if b_saved is None else unbroadcast(_matmul_nd(g, _swap(b_saved)), a_data_shape).reshape(a_shape)
        gb = None if keep_a is None else _grad_b(keep_a().reshape(a_data_shape), g, b_data_shape).reshape(b_shape)
        return ga, gb

    return Tensor._from_op(y.reshape(out_shape), (a, b), backward)


def _operands(a, b):
    """Both operands as Tensors of one dtype with aligned inner axes."""
    if not isinstance(a, Tensor):
        a = Tensor(a, dtype=b.dtype if isinstance(b, Tensor) else None)
    if not isinstance(b, Tensor):
        b = Tensor(b, dtype=a.dtype)
    if a.dtype != b.dtype:
        raise TypeError(f"matmul: dtype mismatch, {a.dtype} and {b.dtype}; convert one with .astype() "
                        f"(lora_np does not upcast silently)")
    _check_shapes(a.shape, b.shape)
    return a, b
