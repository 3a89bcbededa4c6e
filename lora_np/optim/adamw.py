"""AdamW (Loshchilov & Hutter): Adam with decoupled weight decay, step for step as torch.optim.AdamW.

    p ← p · (1 - lr·λ)
    m ← β₁ m + (1-β₁) g          v ← β₂ v + (1-β₂) g²
    p ← p - (lr / (1-β₁ᵗ)) · m / (√v / √(1-β₂ᵗ) + ε)

Two moment arrays per trained parameter: this is the memory that LoRA saves on frozen weights.
The update runs in place, on cache-sized blocks of each parameter (``parallel.blocks``), every block of
every parameter in one hand-off to the threads (``parallel.run_tasks``); each block's temporary is the
size of the block.
"""

import math
from functools import partial

from .. import backend, parallel
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

    def update_tasks(self, p, grad, group, state):
        """The step's update of ``p`` as tasks, one per block of its flattened arrays (the whole
        arrays, unflattened, when ``p`` is not contiguous)."""
        xp = backend.xp
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        if "exp_avg" not in state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(p.data)
            state["exp_avg_sq"] = xp.zeros_like(p.data)
        state["step"] += 1
        t, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
        coefficients = (lr, beta1, beta2, eps, wd, t)
        arrays = (p.data, grad, m, v)
        if not (p.data.flags.c_contiguous and m.flags.c_contiguous and v.flags.c_contiguous):
            return [partial(adamw_kernel, *arrays, *coefficients)]
        flat = [a.reshape(-1) for a in arrays]
        return [partial(adamw_kernel, *(a[lo:hi] for a in flat), *coefficients)
                for lo, hi in parallel.blocks(p.data.size, parallel.GRAIN)]


def adamw_kernel(p, grad, m, v, lr, beta1, beta2, eps, wd, t):
    """AdamW's t-th update of p, m, v in place (any matching blocks of them), one temporary."""
    xp = backend.xp
    if wd:
        p *= 1.0 - lr * wd
    tmp = xp.empty_like(m)
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
    p += tmp
