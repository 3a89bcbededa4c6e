"""Stochastic gradient descent with optional momentum and (coupled, L2) weight decay, as torch.optim.SGD.

    d = g + λ·p;   b ← μ·b + d  (b = d at the first step);   p ← p - lr·b   (b = d without momentum)
"""

from ..checks import check_number
from .optimizer import Optimizer


class SGD(Optimizer):
    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0):
        super().__init__(params, dict(lr=check_number("lr", lr, min=0, min_open=True),
                                      momentum=check_number("momentum", momentum, min=0),
                                      weight_decay=check_number("weight_decay", weight_decay, min=0)))

    def update(self, p, grad, group, state):
        d = grad + group["weight_decay"] * p.data if group["weight_decay"] else grad
        if group["momentum"]:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = d.copy()
            else:
                buf = state["momentum_buffer"]
                buf *= group["momentum"]
                buf += d
            d = state["momentum_buffer"]
        p.data -= group["lr"] * d
