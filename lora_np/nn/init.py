"""Parameter initialisers. Numbers are drawn on the host (NumPy) and then moved to the backend, so a
given seed gives the same model on the CPU and on the GPU."""

import math

import numpy as np

from .. import backend
from ..checks import check_int


def _check_shape(shape):
    for n in shape:
        check_int(f"each size in the parameter shape {tuple(shape)}", n, min=1)


def placeholder(shape, dtype=np.float32):
    """A weight still to be read: the right shape and dtype, one zero behind it (a read-only,
    zero-stride view) and no memory. A loader replaces it, so a model built to be loaded, even a
    quantized one on a GPU, never holds a float copy of its weights beside the real ones."""
    _check_shape(shape)
    return backend.xp.broadcast_to(backend.xp.zeros((), dtype=dtype), tuple(shape))


def normal(shape, std, dtype=np.float32):
    """N(0, std²) draws; ``std=None``: a ``placeholder``, for a loader to fill."""
    if std is None:
        return placeholder(shape, dtype)
    _check_shape(shape)
    return backend.asarray(backend.host_rng().normal(0.0, std, size=shape).astype(dtype))


def kaiming_uniform(shape, fan_in, dtype=np.float32):
    """U(-b, b) with b = 1/√fan_in: PyTorch's nn.Linear default (kaiming_uniform with a = √5),
    which PEFT uses for lora_A."""
    _check_shape(shape)
    bound = 1.0 / math.sqrt(fan_in)
    return backend.asarray(backend.host_rng().uniform(-bound, bound, size=shape).astype(dtype))


def zeros(shape, dtype=np.float32):
    _check_shape(shape)
    return backend.xp.zeros(shape, dtype=dtype)


def ones(shape, dtype=np.float32):
    _check_shape(shape)
    return backend.xp.ones(shape, dtype=dtype)
