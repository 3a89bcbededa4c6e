"""AdamW (Loshchilov & Hutter): Adam with decoupled weight decay, step for step as torch.optim.AdamW.

    p ← p · (1 - lr·λ)
    m ← β₁ m + (1-β₁) g          v ← β₂ v + (1-β₂) g²
    p ← p - (lr / (1-β₁ᵗ)) · m / (√v / √(1-β₂ᵗ) + ε)

Two moment arrays per trained parameter: this is the memory that LoRA saves on frozen weights.
The update runs in place, with one scratch buffer reused across parameters.
"""

import math

from .. import backend
from ..checks import check_number, check_probability
from .optimizer import Optimizer


class AdamW(Optimizer):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise ValueError(f"betas must be two numbers in [0, 1); got {betas!r}")
        super().__init__(params, dict(lr=check_number("lr", lr, min=0, min_open=True),
                                      betas=tuple(check_probability(f"betas[{i}]", b) for i, b in enumerate(betas)),
                                      eps=check_number("eps", eps, min=0, min_open=True),
                                      weight_decay=check_number("weight_decay", weight_decay, min=0)))
        self._scratch = None

    def _buffer(self, like):
        """A scratch array shaped like ``like``: a view of one flat buffer, grown when needed."""
        n = like.size
        if self._scratch is None or self._scratch.size < n or self._scratch.dtype != like.dtype:
            self._scratch = backend.xp.empty(max(n, 0 if self._scratch is None else self._scratch.size), like.dtype)
        return self._scratch[:n].reshape(like.shape)

    def update(self, p, grad, group, state):
        xp = backend.xp
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        if "exp_avg" not in state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(p.data)
            state["exp_avg_sq"] = xp.zeros_like(p.data)
        state["step"] += 1
        t, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
        if wd:
            p.data *= 1.0 - lr * wd
        tmp = self._buffer(p.data)
        xp.subtract(grad, m, out=tmp)            # m += (1-β₁)(g - m)
        tmp *= 1.0 - beta1
        m += tmp
        v *= beta2                               # v = β₂v + (1-β₂)g²
        xp.multiply(grad, grad, out=tmp)
        tmp *= 1.0 - beta2
        v += tmp
        xp.sqrt(v, out=tmp)                      # denominator √v/√(1-β₂ᵗ) + ε
        tmp /= math.sqrt(1.0 - beta2 ** t)
        tmp += eps
        xp.divide(m, tmp, out=tmp)
        tmp *= -lr / (1.0 - beta1 ** t)
        p.data += tmp
