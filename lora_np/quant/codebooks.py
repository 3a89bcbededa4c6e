"""The two lookup tables of bitsandbytes' blockwise quantization, rebuilt from their definitions.

**NF4 (4-bit NormalFloat), QLoRA §3.** Pretrained weights are close to normal, N(0, σ²); after
dividing a block by its absmax they lie in [-1, 1]. An information-theoretically good 4-bit code
for such data puts its 16 levels at *quantiles* of N(0, 1), so each level is used about equally
often. Two constraints shape the table:

* zero must be exact (padding and zero weights stay zero), and
* ±1 must be levels (the block's absmax itself is representable),

so the code is asymmetric: 8 levels for the positive half and 7 for the negative half, plus 0.
With Φ⁻¹ the inverse normal CDF and δ = 1 - ½(1/32 + 1/30) = 0.9677083 (halfway between the
outermost quantile of a 16-level and of a 15-level equal-mass code, so Φ⁻¹(δ) ≈ 1.85σ is finite):

    positive:  Φ⁻¹(p)  for p in linspace(δ, ½, 9)[:-1]         (8 values, Φ⁻¹(½) = 0 dropped)
    negative: -Φ⁻¹(p)  for p in linspace(δ, ½, 8)[:-1]         (7 values)
    NF4      = sort(positive ∪ negative ∪ {0}) / max             (16 values in [-1, 1])

bitsandbytes computes the quantile points with ``torch.linspace`` in float32 and keeps the
result as float32; doing the same (``linspace_float32``) reproduces its hard-coded table bit for
bit, which the byte-exact packing needs (tests/test_quant.py checks it).

**The dynamic 8-bit map** (Dettmers 2016, "8-Bit Approximations for Parallelism"), used by double
quantization for the absmax values: a sign, then for i = 0..6 a decade 10^(i-6) holding 2^i
linearly spaced mantissas (midpoints of linspace(0.1, 1, 2^i + 1)), plus 0 and 1: 256 values
spanning seven orders of magnitude; its ends are -0.99297 and 1.
"""

from statistics import NormalDist

import numpy as np

NF4_OFFSET = 0.9677083  # δ = 1 - (1/32 + 1/30)/2, rounded as bitsandbytes writes it


def linspace_float32(start, stop, num):
    """``torch.linspace(start, stop, num)`` in float32, bit for bit: the first half counts up from
    ``start``, the second half down from ``stop``, each point one fused multiply-add (rounded once)."""
    start, stop = np.float32(start), np.float32(stop)
    step = np.float64(np.float32((stop - start) / np.float32(num - 1)))
    i = np.arange(num)
    return np.where(i < num // 2, np.float64(start) + i * step,
                    np.float64(stop) - (num - 1 - i) * step).astype(np.float32)


def nf4_codebook(offset=NF4_OFFSET):
    """The 16 NF4 levels (float32, ascending) from normal quantiles, as derived in the module docstring."""
    phi_inv = NormalDist().inv_cdf
    positive = [phi_inv(float(p)) for p in linspace_float32(offset, 0.5, 9)[:-1]]
    negative = [-phi_inv(float(p)) for p in linspace_float32(offset, 0.5, 8)[:-1]]
    levels = np.sort(np.array(positive + negative + [0.0], dtype=np.float32))
    return levels / levels.max()


def dynamic_codebook():
    """bitsandbytes' signed dynamic 8-bit map (256 float32 values, ascending)."""
    values = [0.0, 1.0]
    for i in range(7):
        edges = linspace_float32(0.1, 1.0, 2 ** i + 1)
        means = (edges[:-1] + edges[1:]) / np.float32(2)
        decade = np.float32(10.0 ** (i - 6)) * means
        values += decade.tolist() + (-decade).tolist()
    return np.sort(np.array(values, dtype=np.float32))


NF4_CODE = nf4_codebook()
DYNAMIC_CODE = dynamic_codebook()
