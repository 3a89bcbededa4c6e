"""The one wrapper of the gated MLP ops: h = act(a) ⊙ b from a forward and a backward kernel.

SwiGLU (Llama, ``swiglu.py``) and GeGLU (Gemma, ``geglu.py``) differ only in their activation, so
their kernels differ and this glue does not: check the two Tensors, run the forward kernel on
blocks of rows, and give autograd a backward that runs the backward kernel into dL/da and dL/db.
The backward keeps a and b, so h is not kept beside them: a consumer that needs h for its own
backward (the down projection's LoRA adapter, for dL/dA) runs the forward kernel on them again
(``autograd.saved_data``), the same bits, one elementwise pass instead of a (B, T, 4C) array held
for the whole step.
"""

from .. import backend, parallel
from ..autograd import Tensor


def _rows(t):
    x = backend.xp.ascontiguousarray(t)
    return x.reshape(-1, x.shape[-1])


def gated(name, kernel, backward_kernel, a, b):
    """h = act(a) ⊙ b: ``kernel(h, a, b)`` forward, ``backward_kernel(da, db, g, a, b)`` backward."""
    if a.shape != b.shape or a.dtype != b.dtype:
        raise ValueError(f"{name}: gate and up must have one shape and dtype; got {a.shape} {a.dtype}, "
                         f"{b.shape} {b.dtype}")
    xp = backend.xp
    shape = a.shape
    a2, b2 = _rows(a.data), _rows(b.data)
    h = xp.empty_like(a2)
    parallel.for_rows(kernel, (h, a2, b2))
    need_a, need_b = a.requires_grad, b.requires_grad

    def remake():  # h again from the a and b the backward keeps (autograd.saved_data)
        h_again = xp.empty_like(a2)
        parallel.for_rows(kernel, (h_again, a2, b2))
        return h_again.reshape(shape)

    def backward(g):
        da, db = xp.empty_like(a2), xp.empty_like(b2)
        parallel.for_rows(backward_kernel, (da, db, _rows(g), a2, b2))
        return (da.reshape(shape) if need_a else None), (db.reshape(shape) if need_b else None)

    return Tensor._from_op(h.reshape(shape), (a, b), backward, remake)
