"""How a new adapter's A and B start: PEFT's ``init_lora_weights`` options, in GPT-2's (in, out) layout.

PEFT writes them for ``nn.Linear``, whose weight is Wᵀ (out, in) of ours; each formula below is
PEFT's applied to Wᵀ, and the residual is transposed back.

    True        A ~ U(-1/√in, 1/√in) (Kaiming-uniform, a=√5),  B = 0            ΔW = 0 at step 0
    "gaussian"  A ~ N(0, (1/r)²),                               B = 0            ΔW = 0 at step 0
    "pissa"     Wᵀ = U S Vᵀ (SVD), S_r ← S_r / s:  A = √S_r V_rᵀ, B = U_r √S_r,   W ← W - s·AᵀBᵀ
    "olora"     Wᵀ = Q R (QR):                      A = R[:r],    B = Q[:, :r],  W ← W - s·AᵀBᵀ
    False       A and B random (nn.Linear's default for both): an adapter that is not the identity

PiSSA (Meng et al. 2024) puts the principal part of W into the trained factors and leaves the
residual frozen; OLoRA (Büyükakyüz 2024) starts from an orthonormal basis of W's columns. Both
change the base weight, so the adapted model still equals the base at step 0 (up to rounding),
but the base alone is no longer the original model: ``disable_lora`` gives the residual.

PEFT 0.21.2 computes both in float32 (and refuses float64 weights); here the factorisation runs in
float64 and the results are cast to the weight's dtype. Its ``olora_init`` does not transpose a
Conv1D weight (``pissa_init`` does), so on GPT-2 it builds lora_A with shape (r, out) and the
forward fails; what is here is OLoRA as PEFT defines it for ``nn.Linear``, applied to Wᵀ.
"""

import numpy as np

from .. import backend
from ..nn import init


def lora_factors(weight, r, scaling, how):
    """(A (r, in), B (out, r), residual W or None) for ``how`` = one of LoraConfig's init choices."""
    xp = backend.xp
    n_in, n_out = weight.shape
    dtype = weight.dtype
    if how is True or how is False:
        a = init.kaiming_uniform((r, n_in), n_in, dtype)
        b = init.kaiming_uniform((n_out, r), r, dtype) if how is False else init.zeros((n_out, r), dtype)
        return a, b, None
    if how == "gaussian":
        return init.normal((r, n_in), 1.0 / r, dtype), init.zeros((n_out, r), dtype), None
    wt = weight.T.astype(np.float64)                      # (out, in), nn.Linear's layout
    if how == "pissa":
        u, s_vals, vh = xp.linalg.svd(wt, full_matrices=False)
        sr = s_vals[:r] / scaling
        a = xp.sqrt(sr)[:, None] * vh[:r]                  # √S_r V_rᵀ   (r, in)
        b = u[:, :r] * xp.sqrt(sr)[None, :]                # U_r √S_r    (out, r)
    elif how == "olora":
        q, rr = xp.linalg.qr(wt)
        a, b = rr[:r], q[:, :r]
    else:
        raise ValueError(f"unknown init_lora_weights {how!r}; accepted: True, 'gaussian', 'pissa', 'olora', False")
    residual = (wt - scaling * (b @ a)).T
    return a.astype(dtype), b.astype(dtype), xp.ascontiguousarray(residual.astype(dtype))


def check_embedding_init(how):
    if how not in (True, False, "gaussian"):
        raise ValueError(f"init_lora_weights={how!r} applies to Linear layers only; a LoRA on the token embedding "
                         f"accepts True, 'gaussian' or False")


def embedding_factors(num_embeddings, embedding_dim, r, how, dtype):
    """PEFT's Embedding init: A (r, V) = 0 and B (C, r) ~ N(0, 1) (loralib's choice: the lookup of A is
    sparse, so B carries the randomness); ``how=False``: both ~ N(0, 1). "gaussian" is the default here,
    as in PEFT (its Gaussian option is for Linear layers)."""
    check_embedding_init(how)
    b = init.normal((embedding_dim, r), 1.0, dtype)
    a = init.normal((r, num_embeddings), 1.0, dtype) if how is False else init.zeros((r, num_embeddings), dtype)
    return a, b
