"""DoRA (Liu et al. 2024): weight-decomposed low-rank adaptation, forward and backward in one op.

DoRA splits the adapted weight into a direction and a trained magnitude. With W (in, out) frozen
(GPT-2's Conv1D layout), A (r, in), B (out, r), scaling s and the magnitude m (out,):

    V = W + s·AᵀBᵀ                    (in, out)   the LoRA-adapted weight
    n_j = ‖V[:, j]‖₂                  (out,)      one norm per output feature
    W' = V ⊙ (m/n)                                 each output column rescaled to length m_j

PEFT's ``DoraLinearLayer`` takes the same norm: it transposes a Conv1D weight to (out, in) and
takes ``linalg.norm(·, dim=1)``, i.e. over the inputs, one value per output. With c = m/n (out,),
X̃ = X ⊙ M/(1-p) the adapter's input after dropout, Z = X̃ W, H = X̃ Aᵀ (N, r), U = s·H Bᵀ:

    Y = X W + b + (c - 1) ⊙ Z + c ⊙ U                 (PEFT's formula, dropout included)
      = (X W + s·X Aᵀ Bᵀ) ⊙ c + b = X W' + b          without dropout (X̃ = X)

Backward, from G = dL/dY (N, out), with n **treated as a constant** (DoRA paper §4.3, and PEFT's
``weight_norm.detach()``: the norm follows the updates of ΔW but sends no gradient):

    dL/dm = (Σₙ G ⊙ (Z + U)) / n                        (out,)
    dL/dB = s · (G ⊙ c)ᵀ H                               (out, r)
    dL/dH = s · (G ⊙ c) B,   dL/dA = (dL/dH)ᵀ X̃          (r, in)
    dL/dX = G Wᵀ + (((c - 1) ⊙ G) Wᵀ + (dL/dH) A) ⊙ M/(1-p)   (= (G ⊙ c) Wᵀ + (dL/dH) A without dropout)
    dL/dW = Xᵀ G + X̃ᵀ ((c - 1) ⊙ G),  dL/db = Σₙ G      only if W, b require grad

The exact gradient adds the path through n. With q = Σₙ G ⊙ (Z + U) (= dL/dc) and ∂n_j/∂V_ij = V_ij/n_j:

    dL/dn = -q ⊙ m / n²,     dL/dV = V ⊙ (dL/dn / n)  (each column j scaled by -q_j m_j / n_j³)
    dL/dA += s · (dL/dV · B)ᵀ,   dL/dB += s · (dL/dV)ᵀ Aᵀ,   dL/dW += dL/dV

``detach_norm=False`` computes that exact gradient (gradchecked against central differences);
the default, like PEFT, drops it. Passing ``weight_norm`` (a precomputed n) makes n an outside
constant, which is how the detached gradient is gradchecked: central differences then hold n fixed.
Plain version, composed of primitive ops: ``dora_linear_reference`` at the end of this file.
"""

from .. import backend
from ..autograd import Tensor
from ..checks import check_probability
from .dropout import dropout_mask
from .linear import check_linear_shapes
from .lora_linear import check_lora_shapes


def dora_weight_norm(weight, lora_A, lora_B, scaling):
    """n = ‖W + s·AᵀBᵀ‖ over the input axis: one norm per output feature (out,), as plain arrays."""
    xp = backend.xp
    v = weight + scaling * (lora_A.T @ lora_B.T)
    return xp.sqrt((v * v).sum(axis=0)), v


def dora_linear(x, weight, bias, lora_A, lora_B, magnitude, scaling, dropout_p=0.0, training=True,
                weight_norm=None, detach_norm=True):
    """Y = X W + b + (m/n - 1) ⊙ X̃W + (m/n) ⊙ s·X̃AᵀBᵀ, with the backward of the module docstring.

    ``weight_norm``: n given from outside (a constant); None computes it from W, A, B now.
    ``detach_norm``: True (DoRA §4.3, PEFT) sends no gradient through n; False gives the exact one.
    """
    xp = backend.xp
    check_linear_shapes(x, weight, bias, "dora_linear")
    check_lora_shapes(weight, lora_A, lora_B)
    n_in, n_out = weight.shape
    if magnitude.shape != (n_out,) or magnitude.dtype != weight.dtype:
        raise ValueError(f"dora_linear: magnitude has shape {magnitude.shape} and dtype {magnitude.dtype}; "
                         f"it needs shape ({n_out},) (one value per output feature) and dtype {weight.dtype}")
    p = check_probability("lora_dropout", dropout_p) if training else 0.0
    w, a, bb, m = weight.data, lora_A.data, lora_B.data, magnitude.data
    exact = not detach_norm and weight_norm is None
    if weight_norm is None:
        norm, v = dora_weight_norm(w, a, bb, scaling)
    else:
        norm = weight_norm.data if isinstance(weight_norm, Tensor) else xp.asarray(weight_norm, dtype=w.dtype)
        if norm.shape != (n_out,):
            raise ValueError(f"dora_linear: weight_norm has shape {norm.shape}; it needs ({n_out},)")
        v = None
    c = m / norm                                                  # (out,)
    x2 = x.data.reshape(-1, n_in)
    keep = dropout_mask(x2.shape, p) if p > 0.0 else None
    inv_keep = 1.0 / (1.0 - p) if p > 0.0 else 1.0
    xd = x2 if keep is None else x2 * keep * inv_keep              # X̃
    h = xd @ a.T                                                  # H (N, r)
    zu = xd @ w                                                   # Z, then Z + U
    zu += scaling * (h @ bb.T)
    y = zu * c
    if keep is not None:
        y += x2 @ w - xd @ w                                      # X W - Z: the base sees the undropped input
    if bias is not None:
        y += bias.data
    parents = (x, weight) + (() if bias is None else (bias,)) + (lora_A, lora_B, magnitude)
    need_x, need_w, need_b = x.requires_grad, weight.requires_grad, bias is not None and bias.requires_grad
    need_a, need_bb, need_m = lora_A.requires_grad, lora_B.requires_grad, magnitude.requires_grad
    x_shape, has_bias = x.shape, bias is not None
    zu_saved = zu if (need_m or exact) else None

    def backward(g):
        g2 = g.reshape(-1, n_out)
        gc = g2 * c                                               # G ⊙ c
        dh = scaling * (gc @ bb)                                  # dL/dH (N, r)
        q = (g2 * zu_saved).sum(axis=0) if zu_saved is not None else None   # dL/dc
        dm = q / norm if need_m else None
        dA = dh.T @ xd if need_a else None
        dB = scaling * (gc.T @ h) if need_bb else None
        dx = dw = None
        if need_x:
            if keep is None:
                dx = gc @ w.T + dh @ a
            else:
                dx = g2 @ w.T + ((g2 * (c - 1)) @ w.T + dh @ a) * keep * inv_keep
        if need_w:
            dw = x2.T @ g2 + xd.T @ (g2 * (c - 1))
        if exact:
            dv = v * (-q * m / norm ** 3)                         # dL/dV, (in, out)
            if need_a:
                dA = dA + scaling * (dv @ bb).T
            if need_bb:
                dB = dB + scaling * (dv.T @ a.T)
            if need_w:
                dw = dw + dv
        db = g2.sum(axis=0) if need_b else None
        return ((None if dx is None else dx.reshape(x_shape)), dw) + ((db,) if has_bias else ()) + (dA, dB, dm)

    return Tensor._from_op(y.reshape(*x.shape[:-1], n_out), parents, backward)


def dora_linear_reference(x, weight, bias, lora_A, lora_B, magnitude, scaling):
    """The plain math without dropout, from primitive ops: Y = (X W + s·(X Aᵀ) Bᵀ) ⊙ (m / n) + b, with n
    computed from the current values and wrapped as a constant Tensor (the detached norm)."""
    from . import add, matmul, mul, transpose
    norm = Tensor(dora_weight_norm(weight.data, lora_A.data, lora_B.data, scaling)[0])
    adapted = add(matmul(x, weight), mul(matmul(matmul(x, transpose(lora_A)), transpose(lora_B)), scaling))
    y = mul(adapted, magnitude / norm)
    return y if bias is None else add(y, bias)
