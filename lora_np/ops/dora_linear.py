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
Plain version, composed of primitive ops: ``lora_np.ops.reference.dora_linear``.
"""

from .. import backend, parallel
from ..autograd import Tensor
from ..checks import check_probability
from .dropout import dropout_mask
from .linear import check_linear_shapes
from .lora_linear import check_lora_shapes


def dora_weight_norm(W, A, B, s):
    """(n, V): V = W + s·AᵀBᵀ (in, out) and n = ‖V‖ over the input axis, one norm per output feature (out,)."""
    V = W + s * (A.T @ B.T)
    return backend.xp.sqrt((V * V).sum(axis=0)), V


def check_dora_inputs(x, weight, bias, lora_A, lora_B, magnitude, weight_norm):
    """The shapes and dtypes dora_linear needs; returns n as an array if it is given, else None."""
    check_linear_shapes(x, weight, bias, "dora_linear")
    check_lora_shapes(weight, lora_A, lora_B)
    n_out = weight.shape[1]
    if magnitude.shape != (n_out,) or magnitude.dtype != weight.dtype:
        raise ValueError(f"dora_linear: magnitude has shape {magnitude.shape} and dtype {magnitude.dtype}; "
                         f"it needs shape ({n_out},) (one value per output feature) and dtype {weight.dtype}")
    if weight_norm is None:
        return None
    n = weight_norm.data if isinstance(weight_norm, Tensor) else backend.xp.asarray(weight_norm, dtype=weight.dtype)
    if n.shape != (n_out,):
        raise ValueError(f"dora_linear: weight_norm has shape {n.shape}; it needs ({n_out},)")
    return n


def dora_forward(X, X_tilde, W, b, A, B, s, c):
    """Plain arrays: (Y, H, Z + U) with H = X̃ Aᵀ, Z + U = X̃ W + s·H Bᵀ and
    Y = X W + b + (c - 1) ⊙ Z + c ⊙ U = (Z + U) ⊙ c + (X - X̃) W + b."""
    H = parallel.matmul(X_tilde, A.T)
    ZU = parallel.gemm(backend.xp.empty((X.shape[0], W.shape[1]), dtype=X.dtype), ((X_tilde, W), (s * H, B.T)))
    Y = ZU * c
    if X_tilde is not X:
        Y += parallel.matmul(X - X_tilde, W)              # the base sees the undropped input
    if b is not None:
        Y += b
    return Y, H, ZU


def dora_backward(G, saved, s, need):
    """Plain arrays: the gradients of the module docstring, for G = dL/dY (N, out), each only if
    ``need`` says so; ``saved`` holds X, X̃, W, A, B, m, n, c, M, p, H, Z + U and V (exact only)."""
    X, X_tilde, W, A, B, m, n, c, M, p, H, ZU, V = saved
    Gc = G * c                                                            # G ⊙ c
    dH = parallel.matmul(Gc, B)
    dH *= s                                                               # dL/dH (N, r)
    q = (G * ZU).sum(axis=0) if ZU is not None else None                  # dL/dc
    grads = {"m": q / n if need["m"] else None,
             "A": parallel.matmul(dH.T, X_tilde) if need["A"] else None,
             "B": s * parallel.matmul(Gc.T, H) if need["B"] else None,
             "b": G.sum(axis=0) if need["b"] else None, "X": None, "W": None}
    if need["X"] and M is None:
        grads["X"] = parallel.gemm(backend.xp.empty_like(X), ((Gc, W.T), (dH, A)))
    elif need["X"]:
        adapter = parallel.gemm(backend.xp.empty_like(X), ((G * (c - 1), W.T), (dH, A)))
        grads["X"] = parallel.matmul(G, W.T) + adapter * M * (1.0 / (1.0 - p))
    if need["W"]:
        grads["W"] = parallel.gemm(backend.xp.empty_like(W), ((X.T, G), (X_tilde.T, G * (c - 1))))
    if V is not None:                                                     # the exact gradient, through n
        dV = V * (-q * m / n ** 3)                                        # dL/dV, (in, out)
        for name, extra in (("A", s * (dV @ B).T), ("B", s * (dV.T @ A.T)), ("W", dV)):
            if need[name]:
                grads[name] += extra
    return grads


def dora_linear(x, weight, bias, lora_A, lora_B, magnitude, scaling, dropout_p=0.0, training=True,
                weight_norm=None, detach_norm=True):
    """Y = X W + b + (m/n - 1) ⊙ X̃W + (m/n) ⊙ s·X̃AᵀBᵀ, with the backward of the module docstring.

    ``weight_norm``: n given from outside (a constant); None computes it from W, A, B now.
    ``detach_norm``: True (DoRA §4.3, PEFT) sends no gradient through n; False gives the exact one.
    Plain version: ``lora_np.ops.reference.dora_linear``.
    """
    n = check_dora_inputs(x, weight, bias, lora_A, lora_B, magnitude, weight_norm)
    p = check_probability("lora_dropout", dropout_p) if training else 0.0
    s, W, A, B, m = scaling, weight.data, lora_A.data, lora_B.data, magnitude.data
    exact = not detach_norm and weight_norm is None
    V = None
    if n is None:
        n, V = dora_weight_norm(W, A, B, s)
    c = m / n                                                             # (out,)
    X = x.data.reshape(-1, W.shape[0])
    M = dropout_mask(X.shape, p) if p > 0.0 else None
    X_tilde = X if M is None else X * M * (1.0 / (1.0 - p))                # X̃
    Y, H, ZU = dora_forward(X, X_tilde, W, None if bias is None else bias.data, A, B, s, c)
    parents = (x, weight) + (() if bias is None else (bias,)) + (lora_A, lora_B, magnitude)
    need = {"X": x.requires_grad, "W": weight.requires_grad, "b": bias is not None and bias.requires_grad,
            "A": lora_A.requires_grad, "B": lora_B.requires_grad, "m": magnitude.requires_grad}
    saved = (X, X_tilde, W, A, B, m, n, c, M, p, H, ZU if (need["m"] or exact) else None, V if exact else None)
    x_shape, has_bias = x.shape, bias is not None

    def backward(g):
        d = dora_backward(g.reshape(-1, W.shape[1]), saved, s, need)
        dX = None if d["X"] is None else d["X"].reshape(x_shape)
        return (dX, d["W"]) + ((d["b"],) if has_bias else ()) + (d["A"], d["B"], d["m"])

    return Tensor._from_op(Y.reshape(*x.shape[:-1], W.shape[1]), parents, backward)
