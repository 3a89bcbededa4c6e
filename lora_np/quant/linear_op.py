"""The affine map of a quantized frozen weight, dequantized band by band inside the matmul.

With Q the codes of Wᵀ (out, in) and deq(Q) its float values (``QuantWeight.band``):

    Forward:   Y = X W + b = X deq(Q)ᵀ + b         one band of output columns (rows of Q) at a time
    Backward:  dL/dX = G Wᵀ = G deq(Q)             one band of input columns of Q at a time
               dL/db = Σₙ G
               no dL/dW: the codes are a step function of W (zero gradient almost everywhere)
               and frozen; QLoRA trains only the adapter beside them.

Each band is about ``qweight.band_floats`` values (NF4/int8/GGUF: ``BAND``, 512 KB, so that the
decoder's temporaries stay in L2; bf16, whose widening is one shift: ``WIDE_BAND``, 4 MiB, so that
each GEMM is long enough for BLAS to run at full speed) and is dropped after its GEMM, so the
float32 matrix never exists whole; forward and backward each decode Q once (under gradient
checkpointing the recomputed forward keeps its bands for the backward: ``quant_linear``). A band is
never narrower than ``MIN_SIDE`` rows (forward) or columns (backward), though: a GEMM with a side
under ~256 runs BLAS at a fraction of its rate, and at T 512 the GEMMs, not the decoding, are most of
the time (a (512, 8960) × (8960, 14) band of a 1.5B model's down_proj took 2.8× the float32 GEMM's
time per weight; NF4 decodes at ~2 ns a weight, benchmarks/results_scale_profile.md). So a band of a
wide matrix holds up to 256 × 8960 floats (9 MB). The bands of one call run on all threads
(``parallel.parallel_for``; never fewer bands than threads), each writing its own slice of Y or dL/dX.

``quant_lora_linear`` adds the LoRA branch, Y += s·dropout(X) Aᵀ Bᵀ, composed from the library's
matmul, mul and dropout ops, whose backward passes give dA, dB and the adapter's share of dX.
"""

from .. import backend, ops, parallel
from ..autograd import Tensor, is_grad_enabled
from ..nn.checkpointing import may_keep
from ..ops.lora_linear import check_lora_shapes

BAND = 1 << 17
WIDE_BAND = 1 << 20
MIN_SIDE = parallel.GEMM_MIN_SIDE  # rows / columns of a band at least: narrower GEMMs waste BLAS


def _band_items(band_floats, floats_per_item, side_per_item=1):
    """Items (rows of Wᵀ, or blocks of its columns) per band: about ``band_floats`` floats, at least
    MIN_SIDE rows or columns of the band's GEMM."""
    return max(1, band_floats // floats_per_item, -(-MIN_SIDE // side_per_item))


def _over_bands(n, band, fn):
    """``fn(lo, hi)`` for bands [lo, hi) of at most ``band`` items that cover range(n), on all threads
    (a band is cut shorter when n / band would leave a thread without one)."""
    band = max(1, min(band, -(-n // parallel.thread_count())))

    def bands(lo, hi):
        for b in range(lo, hi, band):
            fn(b, min(b + band, hi))
    parallel.parallel_for(n, bands, grain=band)


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

    def output_band(r0, r1):
        w_band = qweight.band(r0, r1)
        if kept is not None:
            kept[r0:r1] = w_band
        y[:, r0:r1] = x2 @ w_band.T
        if b is not None:
            y[:, r0:r1] += b[r0:r1]

    _over_bands(n_out, _band_items(qweight.band_floats, n_in), output_band)
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

    def input_band(j0, j1):
        c0, c1 = j0 * bs, j1 * bs
        dx[:, c0:c1] = g2 @ (qweight.band(0, n_out, c0, c1) if kept is None else kept[:, c0:c1])

    _over_bands(n_in // bs, _band_items(qweight.band_floats, bs * n_out, bs), input_band)
    return dx


def quant_lora_linear(x, qweight, bias, lora_A, lora_B, scaling, dropout_p=0.0, training=True):
    """y = x·deq(Q)ᵀ + b + s·dropout(x)·Aᵀ·Bᵀ (``ops.lora_linear``'s signature, a quantized base)."""
    check_lora_shapes(qweight, lora_A, lora_B)
    y = quant_linear(x, qweight, bias)
    x_adapter = ops.dropout(x, dropout_p, training) if training and dropout_p > 0 else x
    return y + ops.matmul(ops.matmul(x_adapter, lora_A.T) * scaling, lora_B.T)
