"""The affine map of a quantized frozen weight, dequantized band by band inside the matmul.

With Q the codes of Wᵀ (out, in) and deq(Q) its float values (``QuantWeight.band``):

    Forward:   Y = X W + b = X deq(Q)ᵀ + b         one band of output columns (rows of Q) at a time
    Backward:  dL/dX = G Wᵀ = G deq(Q)             one band of input columns of Q at a time
               dL/db = Σₙ G
               no dL/dW: the codes are a step function of W (zero gradient almost everywhere)
               and frozen; QLoRA trains only the adapter beside them.

A band holds ``qweight.band_floats`` values to twice that (NF4/int8/GGUF: ``BAND``, 4M floats,
16 MiB; bf16: ``WIDE_BAND``, 1M, the budget the bf16 base's memory was measured with) and is dropped
after its GEMM, so the float32 matrix of a large weight never exists whole; forward and backward each
decode Q once (under gradient checkpointing the recomputed forward decodes its bands straight into one
kept (out, in) array, which dL/dX then reads: ``quant_linear``). Each band is decoded on all threads
(sub-bands of ``DECODE`` floats, whose temporaries stay in L2), then multiplied on all threads by
``parallel.gemm``, as the float32 layer's GEMM is. So the GEMMs are long: at T 512 they, not the
decoding, are most of the step, and a GEMM with a side of a few hundred re-packs X for every band
(bands of 256 rows of a 1.5B model's gate_proj cost ~18% more GEMM time than one whole GEMM; NF4
decodes at ~1.2 ns a weight). A band is never narrower than ``MIN_SIDE`` rows (forward) or columns
(backward). Up to 1.5B shapes a weight is one or a few bands. The bands depend only on the weight's
shape, so the plain, the checkpointed and the recomputed forward run the same GEMMs (the same bits).

``quant_lora_linear`` adds the LoRA branch, Y += s·dropout(X) Aᵀ Bᵀ, composed from the library's
matmul, mul and dropout ops, whose backward passes give dA, dB and the adapter's share of dX.
"""

import numpy as np

from .. import backend, ops, parallel
from ..autograd import Tensor, is_grad_enabled
from ..nn.checkpointing import may_keep
from ..ops.lora_linear import check_lora_shapes

BAND = 1 << 22
WIDE_BAND = 1 << 20
DECODE = 1 << 17  # floats decoded per task: a sub-band's temporaries stay in L2
MIN_SIDE = parallel.GEMM_MIN_SIDE  # rows / columns of a band at least: narrower GEMMs waste BLAS


def _bands(n, floats_per_item, band_floats, side_per_item=1):
    """Edges of equal bands of n items (rows of Wᵀ, or blocks of its columns): ``band_floats`` floats
    to twice that each, at least MIN_SIDE rows or columns of the band's GEMM (or all n)."""
    per_band = max(1, band_floats // floats_per_item, -(-MIN_SIDE // side_per_item))
    count = max(1, n // per_band)
    return [n * i // count for i in range(count + 1)]


def _tile(flat, rows, cols):
    """A C-contiguous (rows, cols) array over the start of the flat buffer ``flat``."""
    return flat[:rows * cols].reshape(rows, cols)


def _decode(qweight, out, c0=0, c1=None, r0=0):
    """out ← rows r0.. r0+len(out) and columns c0..c1 of Wᵀ = deq(Q), decoded on all threads."""
    width = out.shape[1]

    def rows(lo, hi):
        qweight.band(r0 + lo, r0 + hi, c0, c1, out=out[lo:hi])
    parallel.parallel_for(out.shape[0], rows, grain=max(1, DECODE // width))
    return out


def check_quant_shapes(x, qweight, bias, op="quant_linear"):
    n_in, n_out = qweight.shape
    if x.shape[-1] != n_in:
        raise ValueError(f"{op}: input of shape {x.shape} does not fit a quantized weight of shape {qweight.shape} "
                         f"(the input's last axis must equal in_features)")
    if bias is not None and bias.shape != (n_out,):
        raise ValueError(f"{op}: bias has shape {bias.shape}, expected ({n_out},)")
    if x.dtype != qweight.dtype:
        raise TypeError(f"{op}: input dtype {x.dtype} differs from the weight's compute dtype {qweight.dtype}")


def quant_linear(x, qweight, bias=None):
    """y = x·deq(Q)ᵀ + b for x (..., in).   Grads: dX = G deq(Q), db = Σ G; none for Q.

    Inside a checkpointed block's recomputation, whose backward follows at once, the decoded bands are
    kept (one (out, in) float array, freed with the block's graph) as far as the recomputation's budget
    allows (``nn.checkpointing.may_keep``) and dX = G deq(Q) reads them: Q is decoded twice per step
    (forward, recomputation) instead of three times."""
    check_quant_shapes(x, qweight, bias)
    xp = backend.xp
    n_in, n_out = qweight.shape
    x2 = x.data.reshape(-1, n_in)
    b = None if bias is None else bias.data
    y = xp.empty((x2.shape[0], n_out), dtype=x2.dtype)
    need_x, need_b = x.requires_grad, bias is not None and bias.requires_grad
    keep = need_x and is_grad_enabled() and may_keep(n_out * n_in * x2.itemsize)
    kept = xp.empty((n_out, n_in), dtype=x2.dtype) if keep else None
    edges = _bands(n_out, n_in, qweight.band_floats)
    buffer = None if kept is not None else xp.empty(max(np.diff(edges)) * n_in, dtype=x2.dtype)
    for r0, r1 in zip(edges[:-1], edges[1:]):
        w_band = _decode(qweight, kept[r0:r1] if kept is not None else _tile(buffer, r1 - r0, n_in), r0=r0)
        parallel.gemm(y[:, r0:r1], ((x2, w_band.T),), None if b is None else b[r0:r1])   # Y_band = X W_bandᵀ + b
    parents = (x,) if bias is None else (x, bias)
    x_shape = x.shape

    def backward(g):
        g2 = g.reshape(-1, n_out)
        dx = None
        if need_x:
            dx = input_grad(g2, qweight, kept).reshape(x_shape)
        db = g2.sum(axis=0) if need_b else None
        return (dx,) if bias is None else (dx, db)

    return Tensor._from_op(y.reshape(*x.shape[:-1], n_out), parents, backward)


def input_grad(g2, qweight, kept=None):
    """dL/dX = G deq(Q) for G (N, out), one band of Q's input columns (whole blocks) at a time: decoded
    here, or read from ``kept`` (deq(Q) already decoded), the same GEMMs either way (the same bits)."""
    n_in, n_out = qweight.shape
    bs = qweight.block_size
    dx = backend.xp.empty((g2.shape[0], n_in), dtype=g2.dtype)
    edges = [j * bs for j in _bands(n_in // bs, bs * n_out, qweight.band_floats, bs)]
    buffer = None if kept is not None else backend.xp.empty(n_out * max(np.diff(edges)), dtype=g2.dtype)
    for c0, c1 in zip(edges[:-1], edges[1:]):
        w_band = kept[:, c0:c1] if kept is not None else _decode(qweight, _tile(buffer, n_out, c1 - c0), c0, c1)
        parallel.gemm(dx[:, c0:c1], ((g2, w_band),))                                  # dX_band = G W_band
    return dx


def quant_lora_linear(x, qweight, bias, lora_A, lora_B, scaling, dropout_p=0.0, training=True):
    """y = x·deq(Q)ᵀ + b + s·dropout(x)·Aᵀ·Bᵀ (``ops.lora_linear``'s signature, a quantized base)."""
    check_lora_shapes(qweight, lora_A, lora_B)
    y = quant_linear(x, qweight, bias)
    x_adapter = ops.dropout(x, dropout_p, training) if training and dropout_p > 0 else x
    return y + ops.matmul(ops.matmul(x_adapter, lora_A.T) * scaling, lora_B.T)
