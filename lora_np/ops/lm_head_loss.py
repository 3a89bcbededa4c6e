"""The tied LM head and the cross-entropy in one op, chunk by chunk: the (N, V) logits never exist whole.

Unfused, a language model's last two steps are ``logits = H Wᵀ`` (N, V) and ``cross_entropy``; at
GPT-2's vocabulary (V = 50,257) with N = 512 rows that is 103 MB of logits, as much again for
their gradient, and the biggest matmuls of the step. Here, for each block of R rows of H:

    Z = H_c Wᵀ                         (R, V)   the block's logits, in one reused buffer
    lse = log Σⱼ e^Zⱼ                  (R,)     per row, after subtracting the row max
    loss += Σ_rows (lse - Z[t])                 over rows whose target is not ignore_index
    G = (softmax(Z) - onehot(t)) / n   (R, V)   (zero for ignored rows; n = rows that count)
    dL/dH_c = G W                      (R, C)
    dL/dW  += Gᵀ H_c                   (V, C)   only if W requires grad (full fine-tuning)

which is the chain rule through L = (1/n) Σ (lse - z_t) with dL/dZ = (softmax(Z) - Y)/n (see
cross_entropy.py) and Z = H Wᵀ (so dH = dZ W, dW = dZᵀ H). The loss is a scalar, so its backward
only multiplies these by the incoming g: the gradients are formed here, in the forward pass, while
each block's softmax is in hand, instead of recomputing Z in the backward pass (a third matmul).
They are formed only when grad mode is on and H or W requires grad; under LoRA the embedding is
frozen and gets no dW, neither the matmul nor the (V, C) buffer.

A block is R = CHUNK_BYTES / (V · itemsize) rows (≈150 at GPT-2's vocabulary in float32, 30 MB,
below glibc's mmap threshold as ``parallel.tune_host_allocator`` sets it, so the buffer is reused
step after step without page faults). Its matmuls run in slices of the vocabulary (or of C) on all
threads (``parallel.for_rows`` on transposed views), so every GEMM keeps all R rows: a tall
enough left operand keeps BLAS near its peak, where R/2-row halves would not.

Plain version: ``cross_entropy(matmul(h, W.T), targets)``; tests/test_lm_head_loss.py checks that
both agree in value and gradient.
"""

from .. import backend, parallel
from ..autograd import Tensor, is_grad_enabled
from .cross_entropy import _validated_targets

CHUNK_BYTES = 30 << 20
VOCAB_SLICE = 4096  # columns of Z per task: W's slice (VOCAB_SLICE, C) stays in cache for the GEMM


def rows_per_chunk(vocab, itemsize, chunk_bytes=CHUNK_BYTES):
    """How many rows of logits fit in ``chunk_bytes`` (at least 8)."""
    return max(8, chunk_bytes // (vocab * itemsize))


def logits_kernel(z_t, w, h):
    """One vocabulary slice: zᵀ (Vs, R) = (h wᵀ)ᵀ for w (Vs, C), h (R, C)."""
    backend.xp.matmul(h, w.T, out=z_t.T)


def softmax_kernel(z, lse, scale):
    """z (R, V) ← scale · softmax(z) row by row; lse (R,) ← log Σ e^z."""
    xp = backend.xp
    m = z.max(axis=1, keepdims=True)
    z -= m
    xp.exp(z, out=z)
    s = z.sum(axis=1, keepdims=True)
    z *= scale / s
    lse[:] = (xp.log(s) + m)[:, 0]


def dh_kernel(dh_t, w_t, g):
    """One slice of dh's columns: dhᵀ (Cs, R) = (g w)ᵀ for g (R, V), wᵀ (Cs, V)."""
    backend.xp.matmul(g, w_t.T, out=dh_t.T)


def dw_kernel(dw, g_t, h):
    """One vocabulary slice: dw (Vs, C) += gᵀ h for gᵀ (Vs, R), h (R, C)."""
    dw += g_t @ h


def lm_head_loss(h, weight, targets, ignore_index=-1, chunk_bytes=CHUNK_BYTES):
    """Mean cross-entropy of the logits h·Wᵀ, computed in row blocks.   dL/dH = G W, dL/dW = Gᵀ H.

    ``h``: (..., C) hidden states; ``weight``: (V, C), the token embedding the head is tied to;
    ``targets``: ints of shape h.shape[:-1], ``ignore_index`` rows count for nothing.
    Returns the scalar loss; G = (softmax(h Wᵀ) - onehot) / n is formed block by block.
    """
    xp = backend.xp
    if weight.ndim != 2 or h.shape[-1] != weight.shape[1]:
        raise ValueError(f"lm_head_loss: hidden states of shape {h.shape} do not fit the embedding of shape "
                         f"{weight.shape} (the last axis of h must equal the embedding width)")
    if h.dtype != weight.dtype:
        raise TypeError(f"lm_head_loss: hidden states are {h.dtype}, the embedding is {weight.dtype}")
    h2, w = h.data.reshape(-1, h.shape[-1]), weight.data
    vocab = w.shape[0]
    t, n = _validated_targets(targets, h2.shape[0], vocab, ignore_index)
    keep = t != ignore_index
    t = xp.where(keep, t, 0)
    need_h = is_grad_enabled() and h.requires_grad
    need_w = is_grad_enabled() and weight.requires_grad
    dh = xp.empty_like(h2) if need_h else None
    dw = xp.zeros_like(w) if need_w else None
    scale = w.dtype.type(1.0 / n) if need_h or need_w else w.dtype.type(1.0)

    rows = rows_per_chunk(vocab, w.dtype.itemsize, chunk_bytes)
    buffer = xp.empty((min(rows, h2.shape[0]), vocab), dtype=w.dtype)
    lse = xp.empty(buffer.shape[0], dtype=w.dtype)
    total = xp.zeros((), dtype=xp.float64)
    for lo in range(0, h2.shape[0], rows):
        hi = min(lo + rows, h2.shape[0])
        z, hc, tc, kc = buffer[:hi - lo], h2[lo:hi], t[lo:hi], keep[lo:hi]
        parallel.for_rows(logits_kernel, (z.T, w), (hc,), grain=VOCAB_SLICE)  # Z = H_c Wᵀ
        picked = z[xp.arange(hi - lo), tc]
        parallel.for_rows(softmax_kernel, (z, lse[:hi - lo]), (scale,))  # z now holds softmax / n
        total += ((lse[:hi - lo] - picked) * kc).sum(dtype=xp.float64)
        if need_h or need_w:
            z[xp.arange(hi - lo), tc] -= scale  # G = (softmax - onehot) / n
            if not bool(kc.all()):
                z[~kc] = 0
        if need_h:  # dH_c = G W, in slices of W's columns (each GEMM keeps all R rows)
            parallel.for_rows(dh_kernel, (dh[lo:hi].T, w.T), (z,), grain=max(1, w.shape[1] // parallel.thread_count()))
        if need_w:  # dW += Gᵀ H_c, in vocabulary slices
            parallel.for_rows(dw_kernel, (dw, z.T), (hc,), grain=VOCAB_SLICE)
    loss = (total / n).astype(w.dtype)
    h_shape = h.shape

    def backward(g):  # the gradients are ours alone (the graph runs once): scale them in place
        for grad in (dh, dw):
            if grad is not None:
                xp.multiply(grad, g, out=grad)
        return (dh.reshape(h_shape) if need_h else None, dw)

    return Tensor._from_op(loss, (h, weight), backward)
