"""The plain math of every fused op, composed from primitive Tensor ops: read these first.

Each function has the signature of its fused namesake in ``lora_np.ops`` and computes the same
values, but is built from matmul, add, mul, exp, log, tanh, sum, mean, reshape, indexing... whose
own backward passes are gradchecked one by one, so its gradient comes for free from the chain
rule. The fused ops (``linear.py``, ``lora_linear.py``, ``dora_linear.py``, ``layer_norm.py``,
``gelu.py``, ``geglu.py``, ``softcap.py``, ``attention.py``, ``cross_entropy.py``,
``lm_head_loss.py``) compute the same thing with a hand-derived backward and fewer saved arrays;
``tests/test_reference.py`` checks that the two agree in value and gradient.
This is llm.c's ``matmul_forward_naive`` beside its fast matmul, at picoGPT length.
"""

import math

from .. import backend
from ..autograd import Tensor
from .dropout import dropout
from .join import concatenate
from .index_arrays import as_index_array


def linear(x, weight, bias=None):
    """y = x W + b, with W stored (in, out) as in GPT-2's Conv1D."""
    y = x @ weight
    return y if bias is None else y + bias


def lora_linear(x, weight, bias, lora_A, lora_B, scaling, dropout_p=0.0, training=True):
    """y = x W + b + s (dropout(x) Aᵀ) Bᵀ: the frozen map plus the low-rank update ΔW = s AᵀBᵀ."""
    h = dropout(x, dropout_p, training) @ lora_A.T   # (N, r)
    return linear(x, weight, bias) + scaling * (h @ lora_B.T)


def dora_linear(x, weight, bias, lora_A, lora_B, magnitude, scaling, dropout_p=0.0, training=True,
                weight_norm=None, detach_norm=True):
    """y = x W + b + (m/n - 1) ⊙ x̃ W + (m/n) ⊙ s x̃ Aᵀ Bᵀ, x̃ = dropout(x), n = ‖W + s AᵀBᵀ‖ per output
    column: a constant (detached, or ``weight_norm``) unless detach_norm=False."""
    if weight_norm is None:
        adapted = weight + scaling * (lora_A.T @ lora_B.T)                     # V (in, out)
        norm = (adapted * adapted).sum(axis=0).sqrt()
        norm = norm.detach() if detach_norm else norm
    else:
        norm = weight_norm if isinstance(weight_norm, Tensor) else Tensor(weight_norm, dtype=weight.dtype)
    c = magnitude / norm
    x_tilde = dropout(x, dropout_p, training)
    return linear(x, weight, bias) + (c - 1.0) * (x_tilde @ weight) + c * (scaling * (x_tilde @ lora_A.T @ lora_B.T))


def layer_norm(x, weight=None, bias=None, eps=1e-5):
    """y = (x - μ) / √(σ² + eps) ⊙ w + b, with μ and σ² over the last axis."""
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    y = (x - mu) / (var + eps).sqrt()
    if weight is not None:
        y = y * weight
    return y if bias is None else y + bias


def gelu(x):
    """y = ½ x (1 + tanh(√(2/π) (x + 0.044715 x³))), GPT-2's tanh approximation."""
    return 0.5 * x * (1.0 + (math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)).tanh())


def scaled_dot_product_attention(q, k, v, causal=True, dropout_p=0.0, training=True, window=None, flash_min_t=None):
    """softmax(q kᵀ/√d + M) v, M = -∞ where key j is after query i (queries are the last T_q of T_k),
    or (``window`` W) at least W keys before it: query i sees keys i - W < j ≤ i. ``flash_min_t``
    (which kernels run) changes nothing here.

    Grouped-query attention: H query heads over H_kv = H / G key/value heads, query head h reads
    K/V head h // G: q is viewed (…, H_kv, G, T_q, d) and k, v (…, H_kv, 1, T_k, d), and matmul broadcasts.
    """
    y_shape = q.shape[:-1] + v.shape[-1:]
    if q.ndim > 2 and q.shape[-3] != k.shape[-3]:
        lead, h_kv = q.shape[:-3], k.shape[-3]
        q = q.reshape(*lead, h_kv, q.shape[-3] // h_kv, *q.shape[-2:])
        k, v = (x.reshape(*lead, h_kv, 1, *x.shape[-2:]) for x in (k, v))
    xp, (t_q, t_k) = backend.xp, (q.shape[-2], k.shape[-2])
    scores = q @ k.swapaxes(-1, -2) * (1.0 / math.sqrt(q.shape[-1]))                # (…, T_q, T_k)
    if causal:
        i, j = xp.arange(t_q)[:, None] + t_k - t_q, xp.arange(t_k)                    # query i's key index
        hidden = (j > i) | (j <= i - window) if window is not None else j > i
        scores = scores + Tensor(xp.where(hidden, -xp.inf, 0.0).astype(q.dtype))
    e = (scores - Tensor(scores.data.max(axis=-1, keepdims=True))).exp()   # a constant shift, no overflow
    att = e / e.sum(axis=-1, keepdims=True)
    return (dropout(att, dropout_p, training) @ v).reshape(y_shape)


def causal_self_attention(qkv, n_head, dropout_p=0.0, training=True, window=None, flash_min_t=None):
    """(B, T, 3C) packed q|k|v -> (B, T, C): causal attention per head, heads split and merged."""
    b, t, c3 = qkv.shape
    c = c3 // 3
    heads = qkv.reshape(b, t, 3, n_head, c // n_head).permute(2, 0, 3, 1, 4)   # (3, B, H, T, d)
    y = scaled_dot_product_attention(heads[0], heads[1], heads[2], True, dropout_p, training, window)  # (B, H, T, d)
    return y.permute(0, 2, 1, 3).reshape(b, t, c)


def cross_entropy(logits, targets, ignore_index=-1):
    """Mean over the rows whose target is not ``ignore_index`` of log Σⱼ e^zⱼ - z_target."""
    z = logits.reshape(-1, logits.shape[-1])
    t = as_index_array(targets, z.shape[-1], "cross_entropy targets", ignore=ignore_index).reshape(-1)
    keep = t != ignore_index
    shifted = z - Tensor(z.data.max(axis=-1, keepdims=True))   # a constant shift: e^z never overflows
    log_probs = shifted - shifted.exp().sum(axis=-1, keepdims=True).log()
    picked = log_probs[backend.xp.arange(t.size), backend.xp.where(keep, t, 0)]
    return -(picked * Tensor(keep.astype(z.dtype))).sum() / int(keep.sum())


def lm_head_loss(h, weight, targets, ignore_index=-1, rows_per_chunk=1024, block=None):
    """cross_entropy(h Wᵀ, targets): the tied head's logits formed whole (the tiling arguments
    change nothing here)."""
    return cross_entropy(h @ weight.T, targets, ignore_index)


def rms_norm(x, weight, eps=1e-6):
    """y = x / √(mean(x²) + eps) ⊙ w over the last axis (Llama's RMSNorm: layer norm without μ or b)."""
    return x / ((x * x).mean(axis=-1, keepdims=True) + eps).sqrt() * weight


def rope(x, cos, sin):
    """y = x ⊙ [cos, cos] + rotate_half(x) ⊙ [sin, sin], rotate_half(x) = [-x₂, x₁] (halves of the last axis)."""
    h = x.shape[-1] // 2
    rotated = concatenate([-x[..., h:], x[..., :h]], axis=-1)
    both = backend.xp.concatenate
    return x * Tensor(both([cos, cos], axis=-1)) + rotated * Tensor(both([sin, sin], axis=-1))


def swiglu(a, b):
    """h = silu(a) ⊙ b with silu(a) = a σ(a) = a / (1 + e⁻ᵃ)."""
    return a / ((-a).exp() + 1.0) * b


def geglu(a, b):
    """h = gelu(a) ⊙ b, GELU in its tanh form (Gemma's gelu_pytorch_tanh)."""
    return gelu(a) * b


def softcap(x, cap):
    """y = cap · tanh(x / cap)."""
    return (x * (1.0 / cap)).tanh() * cap
