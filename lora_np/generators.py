"""The two random generators, both reset by :func:`manual_seed`.

The *host* generator (NumPy) draws initial weights: the same numbers on either backend, so a seeded
model is the same model on the CPU and on the GPU. The *device* generator draws dropout masks and
samples tokens where the arrays live (``xp.random``): ``backend.set_backend`` hands its array module
over (:func:`use_array_module`), and both generators start again from the last seed.

    manual_seed(0)
    host_rng().normal(size=3)        # initialisation (nn/init.py)
    rng().random((2, 3))             # dropout masks, sampling (ops/dropout.py, generation.py)
    state = get_rng_state(); ...; set_rng_state(state)     # training checkpoints

``backend`` re-exports these names (``backend.manual_seed`` ...); this module needs nothing from it.
"""

import contextlib
import copy

import numpy as np

from .checks import check_int

_seed = 0
_array_module = np  # the backend's xp, handed over by backend.set_backend
_host = np.random.default_rng(0)
_device = np.random.default_rng(1)


def manual_seed(seed):
    """Seed the host generator (initialisation) and the device generator (dropout, sampling)."""
    global _seed, _host, _device
    _seed = check_int("seed", seed, min=0)
    host_seq, device_seq = np.random.SeedSequence(_seed).spawn(2)
    _host = np.random.default_rng(host_seq)
    _device = _array_module.random.default_rng(int(device_seq.generate_state(1)[0]))


def host_rng():
    """The NumPy generator used for parameter initialisation (same numbers on every backend)."""
    return _host


def rng():
    """The generator of the current backend (dropout masks, token sampling)."""
    return _device


def get_rng_state():
    """Both generators' states as plain JSON-able dicts (for checkpoints); the device generator's
    only on NumPy (CuPy's generator state is not a dict)."""
    state = {"seed": _seed, "host": _host.bit_generator.state}
    if _array_module is np:
        state["device"] = _device.bit_generator.state
    return state


def set_rng_state(state):
    """Restore what :func:`get_rng_state` returned."""
    manual_seed(state["seed"])
    _host.bit_generator.state = state["host"]
    if _array_module is np and "device" in state:
        _device.bit_generator.state = state["device"]


def use_array_module(array_module, reseed=True):
    """Draw device numbers with ``array_module`` from now on (``backend.set_backend``), re-seeding
    both generators with the last seed; ``reseed=False`` for a backend whose error is pending (the
    next ``manual_seed`` raises it, through the stand-in module that raises on any use)."""
    global _array_module
    _array_module = array_module
    if reseed:
        manual_seed(_seed)


def device_generator_copy():
    """An independent copy of the device generator in its current state: drawing from it later gives
    the numbers the device generator gives next (gradient checkpointing replays dropout masks)."""
    return copy.deepcopy(_device)


@contextlib.contextmanager
def replaying(generator):
    """Inside the block ``generator`` (a :func:`device_generator_copy`) is the device generator;
    afterwards the previous one, its state untouched."""
    global _device
    saved, _device = _device, generator
    try:
        yield generator
    finally:
        _device = saved


@contextlib.contextmanager
def device_generator(array_module):
    """Inside the block a fresh device generator on ``array_module``; the previous one afterwards,
    with its state untouched (``backend.using``)."""
    global _array_module, _device
    saved = _array_module, _device
    _array_module, _device = array_module, array_module.random.default_rng(_seed)
    try:
        yield _device
    finally:
        _array_module, _device = saved
