"""Gradient clipping by global norm: if ‖g‖ = √(Σ over all parameters of Σ g²) exceeds max_norm,
scale every gradient by max_norm / (‖g‖ + 1e-6), as torch.nn.utils.clip_grad_norm_."""

from .. import backend, parallel
from ..checks import check_number


def clip_grad_norm_(params, max_norm):
    """Scale gradients in place so their global L2 norm is at most ``max_norm``.

    Returns the norm before clipping as a 0-d array of the backend (no host sync on a GPU).
    """
    xp = backend.xp
    max_norm = check_number("max_norm", max_norm, min=0, min_open=True)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return xp.asarray(0.0)
    with parallel.single_threaded_blas():  # BLAS's threads would spin on while the next step's pool runs
        total = xp.sqrt(sum(xp.vdot(g.reshape(-1), g.reshape(-1)) for g in grads))
    coef = xp.minimum(max_norm / (total + 1e-6), 1.0).astype(grads[0].dtype)
    for g in grads:
        g *= coef
    return total
