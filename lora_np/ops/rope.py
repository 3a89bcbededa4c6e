"""Rotary position embedding (RoPE) as transformers applies it: the ``rotate_half`` convention.

A head vector x of size d is split into halves x = [x₁, x₂] (each d/2). Pair i is (x₁ᵢ, x₂ᵢ), and at
position p it is rotated by the angle θᵢ = p·fᵢ, fᵢ = 1/base^(2i/d) (``inv_freq``):

    y₁ = x₁ cos θ - x₂ sin θ
    y₂ = x₂ cos θ + x₁ sin θ              i.e. y = x ⊙ [cos, cos] + rotate_half(x) ⊙ [sin, sin]

with rotate_half(x) = [-x₂, x₁]. Per pair this is y = R(θ) x with R(θ) = [[cos, -sin], [sin, cos]].
q·k then depends on positions only through their difference: R(θ_p)ᵀ R(θ_s) = R(θ_s - θ_p).
(GPT-J and Meta's original code pair neighbours (x₀, x₁), (x₂, x₃)...; Hugging Face checkpoints
permute q_proj/k_proj rows so that the halves convention gives the same model.)

Backward. y = R x is linear in x with a constant R, so dL/dx = Rᵀ dL/dy, and a rotation's
transpose is its inverse, the rotation by -θ (cos(-θ) = cos θ, sin(-θ) = -sin θ):

    dx₁ = g₁ cos θ + g₂ sin θ
    dx₂ = g₂ cos θ - g₁ sin θ            i.e. the forward with sin → -sin

so the backward is the same kernel run on g with the sign of sin flipped; nothing is saved but
the cos/sin tables, which are constants (no gradient flows into positions).

The tables. ``inv_freq`` is computed as transformers computes it, in float32, bit for bit (Llama 3's
``llama3`` scaling stretches the low frequencies by ``factor`` and blends the middle band). The
angles θ = p·f and their cos, sin are then computed in float64 and rounded to the model's dtype.
transformers forms θ and cos θ in float32 whatever the model's dtype (and its float32 cos is not
correctly rounded, so no NumPy code can copy it bit for bit): at position p the float32 angle is off
by up to p·2⁻²⁴ rad. A float32 model here therefore agrees with transformers' to float32 rounding,
and the float64 comparison in the tests switches transformers' tables to float64 as well.
Plain version: ``lora_np.ops.reference.rope``.
"""

import math

import numpy as np

from .. import backend, parallel
from ..autograd import Tensor

ROPE_TYPES = ("default", "llama3")


def rope_kernel(y, x, cos, sin):
    """On (rows, ..., d): y₁ = x₁ c - x₂ s, y₂ = x₂ c + x₁ s (halves of the last axis)."""
    xp = backend.xp
    h = x.shape[-1] // 2
    x1, x2, y1, y2 = x[..., :h], x[..., h:], y[..., :h], y[..., h:]
    xp.multiply(x1, cos, out=y1)
    y1 -= x2 * sin                      # y₁ = x₁ cos θ - x₂ sin θ
    xp.multiply(x2, cos, out=y2)
    y2 += x1 * sin                      # y₂ = x₂ cos θ + x₁ sin θ


def _rotate(x, cos, sin):
    """R(θ) x over rows of the first axis; ``cos``, ``sin`` broadcast against x[1:, ..., :d/2]."""
    y = backend.xp.empty_like(x)
    parallel.for_rows(rope_kernel, (y, x), (cos, sin))
    return y


def rope(x, cos, sin):
    """y = x ⊙ [cos, cos] + rotate_half(x) ⊙ [sin, sin] over the last axis (size d, even);
    dL/dx = the rotation by -θ of g (module docstring).

    ``x``: a Tensor (B, ..., d); ``cos``, ``sin``: arrays (cos θ and sin θ, one per pair, d/2 wide)
    that broadcast against x[0, ..., :d/2], e.g. (T, d/2) for x (B, H, T, d) or (T, 1, d/2) for
    x (B, T, H, d). Plain version: ``lora_np.ops.reference.rope``."""
    d = x.shape[-1]
    if d % 2 or cos.shape != sin.shape or cos.shape[-1] != d // 2:
        raise ValueError(f"rope: x of shape {x.shape} needs an even last axis and cos/sin with last axis "
                         f"{d // 2}; got cos {cos.shape}, sin {sin.shape}")
    xd = backend.xp.ascontiguousarray(x.data)
    y = _rotate(xd, cos, sin)

    def backward(g):   # in the forward y = R(θ) x, so now dx = R(θ)ᵀ g = R(-θ) g: the same kernel, sin → -sin
        return (_rotate(backend.xp.ascontiguousarray(g), cos, -sin),)

    return Tensor._from_op(y, (x,), backward)


def _llama3_scaled(inv_freq, factor, low_freq_factor, high_freq_factor, original_max_position_embeddings):
    """Llama 3's frequency stretch, step for step as transformers' ``_compute_llama3_parameters``
    (float32): wavelengths λ = 2π/f longer than L/low are slowed by ``factor``, shorter than L/high
    are kept, and the band between is a linear blend in L/λ. PyTorch computes ``number / tensor`` as
    ``reciprocal(tensor) * number``; λ is rounded that way here too, so that f matches bit for bit."""
    f32 = np.float32
    low_wavelen = original_max_position_embeddings / low_freq_factor
    high_wavelen = original_max_position_embeddings / high_freq_factor
    wavelen = (f32(1) / inv_freq) * f32(2 * math.pi)
    scaled = np.where(wavelen > low_wavelen, inv_freq / f32(factor), inv_freq)
    smooth = ((f32(1) / wavelen) * f32(original_max_position_embeddings) - f32(low_freq_factor)) \
        / f32(high_freq_factor - low_freq_factor)
    smoothed = (f32(1) - smooth) * scaled / f32(factor) + smooth * scaled
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32)


def rope_inv_freq(head_dim, theta, scaling=None):
    """fᵢ = 1/θ^(2i/d), i < d/2, in float32 as transformers computes it; ``scaling``: None or a dict
    {"rope_type": "llama3", "factor", "low_freq_factor", "high_freq_factor",
    "original_max_position_embeddings"}."""
    exponent = np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)
    inv_freq = (np.float32(1.0) / (float(theta) ** exponent.astype(np.float64)).astype(np.float32))
    if scaling is None or scaling.get("rope_type", "default") == "default":
        return inv_freq
    args = {k: scaling[k] for k in ("factor", "low_freq_factor", "high_freq_factor",
                                    "original_max_position_embeddings")}
    return _llama3_scaled(inv_freq, **args)


def rope_tables(inv_freq, start, end, dtype):
    """(cos θ, sin θ) for positions start..end-1: two (end - start, d/2) arrays of ``dtype`` on the
    backend, θ = p·f computed in float64 from the float32 fᵢ."""
    angles = np.arange(start, end, dtype=np.float64)[:, None] * inv_freq.astype(np.float64)[None, :]
    return backend.asarray(np.cos(angles).astype(dtype)), backend.asarray(np.sin(angles).astype(dtype))
