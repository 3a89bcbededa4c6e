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
below glibc's mmap threshold as tuned in backend.py, so the buffer is reused step after step
without page faults). Its matmuls run in vocabulary slices on all cores (``backend.parallel_for``)
so every GEMM has all R rows: a tall-enough left operand keeps BLAS near its peak.

Plain version: ``cross_entropy(matmul(h, W.T), targets)``; tests/test_lm_head_loss.py checks that
both agree in value and gradient.
"""

from .. import backend
from ..autograd import Tensor, is_grad_enabled
from .cross_entropy import _validated_targets

CHUNK_BYTES = 30 << 20
VOCAB_SLICE = 4096  # columns of Z per task: W's slice (VOCAB_SLICE, C) stays in cache for the GEMM


def rows_per_chunk(vocab, itemsize, chunk_bytes=CHUNK_BYTES):
    """How many rows of logits fit in ``chunk_bytes`` (at least 8)."""
    return max(8, chunk_bytes // (vocab * itemsize))


def _logits_into(z, h, w):
    """z (R, V) = h (R, C) · wᵀ: in vocabulary slices on all cores (rows, for a small vocabulary)."""
    xp = backend.xp
    if w.shape[0] < 2 * VOCAB_SLICE:
        backend.matmul(h, w.T, out=z)
        return
    backend.parallel_for(w.shape[0], lambda lo, hi: xp.matmul(h, w[lo:hi].T, out=z[:, lo:hi]), grain=VOCAB_SLICE)


def _softmax_rows_inplace(z, scale):
    """z ← scale · softmax(z), row by row; returns log Σ e^z per row (the log-sum-exp)."""
    xp = backend.xp
    lse = xp.empty(z.shape[0], dtype=z.dtype)

    def rows(lo, hi):
        block = z[lo:hi]
        m = block.max(axis=1, keepdims=True)
        block -= m
        xp.exp(block, out=block)
        s = block.sum(axis=1, keepdims=True)
        block *= scale / s
        lse[lo:hi] = (xp.log(s) + m)[:, 0]

    backend.parallel_for(z.shape[0], rows, grain=max(1, (1 << 18) // z.shape[1]))
    return lse


def _grads_of_chunk(g, h, w, dh, dw):
    """dh (R, C) = g w if ``dh`` is given (split over W's columns); dw += gᵀ h if ``dw`` is (over its rows)."""
    xp = backend.xp
    if dh is not None:
        backend.parallel_for(w.shape[1], lambda lo, hi: xp.matmul(g, w[:, lo:hi], out=dh[:, lo:hi]),
                             grain=max(1, w.shape[1] // 2))
    if dw is not None:
        def rows(lo, hi):
            dw[lo:hi] += g[:, lo:hi].T @ h
        backend.parallel_for(w.shape[0], rows, grain=VOCAB_SLICE)


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
    total = xp.zeros((), dtype=xp.float64)
    for lo in range(0, h2.shape[0], rows):
        hi = min(lo + rows, h2.shape[0])
        z, hc, tc, kc = buffer[:hi - lo], h2[lo:hi], t[lo:hi], keep[lo:hi]
        _logits_into(z, hc, w)
        picked = z[xp.arange(hi - lo), tc]
        lse = _softmax_rows_inplace(z, scale)  # z now holds softmax / n
        total += ((lse - picked) * kc).sum(dtype=xp.float64)
        if need_h or need_w:
            z[xp.arange(hi - lo), tc] -= scale  # G = (softmax - onehot) / n
            if not bool(kc.all()):
                z[~kc] = 0
            _grads_of_chunk(z, hc, w, None if dh is None else dh[lo:hi], dw)
    loss = (total / n).astype(w.dtype)
    h_shape = h.shape

    def backward(g):  # the gradients are ours alone (the graph runs once): scale them in place
        for grad in (dh, dw):
            if grad is not None:
                xp.multiply(grad, g, out=grad)
        return (dh.reshape(h_shape) if need_h else None, dw)

    return Tensor._from_op(loss, (h, weight), backward)
