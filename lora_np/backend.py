"""The one array-module switch: NumPy on the CPU or CuPy on an NVIDIA GPU.

Every other module writes ``backend.xp.zeros(...)``, reading the attribute at call time, so
``set_backend("cupy")`` moves the whole library to the GPU. This is the only module that imports cupy.
``LORA_NP_BACKEND=numpy|cupy`` picks the backend at import. A bad value never breaks the import: it
is raised at the first use of ``backend.xp`` (as JAX does with JAX_PLATFORMS), so a user who asked
for the GPU never silently computes on the CPU; ``check_environment()`` raises it up front.

The random generators live in ``generators.py`` (re-exported here: ``backend.manual_seed``,
``backend.rng()``...); a switch hands them the new array module and re-seeds them.
"""

import contextlib
import os

import numpy as np

from . import generators
from .generators import get_rng_state, host_rng, manual_seed, rng, set_rng_state  # noqa: F401 (re-exported)

BACKENDS = ("numpy", "cupy")
GPU_INSTALL_HINT = "pip install -r requirements-gpu.txt  (installs cupy-cuda12x; needs an NVIDIA GPU with CUDA 12)"

xp = np  # the array module of the current backend
_name = "numpy"
_environment_error = None  # (exception class, message) from a bad LORA_NP_BACKEND, raised at first use


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run on this machine (e.g. cupy without a CUDA GPU)."""


def _load_cupy():
    try:
        import cupy
    except ImportError:
        raise BackendUnavailableError(
            f"the 'cupy' backend needs CuPy, which is not installed: {GPU_INSTALL_HINT}") from None
    try:
        n_devices = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDA driver/runtime errors come in several types
        raise BackendUnavailableError(
            f"CuPy is installed but CUDA is not usable ({type(exc).__name__}: {exc}); "
            f"the 'cupy' backend needs an NVIDIA GPU and driver. {GPU_INSTALL_HINT}") from None
    if n_devices == 0:
        raise BackendUnavailableError(f"CuPy is installed but no CUDA device was found. {GPU_INSTALL_HINT}")
    return cupy


def set_backend(name):
    """Switch every array computation to ``"numpy"`` (CPU) or ``"cupy"`` (GPU); re-seed both generators.
    Tensors made before the switch keep their arrays: make models after switching (or load them)."""
    global xp, _name, _environment_error
    if not isinstance(name, str) or name.strip().lower() not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; accepted: 'numpy', 'cupy'")
    name = name.strip().lower()
    xp = _load_cupy() if name == "cupy" else np
    _name, _environment_error = name, None
    generators.use_array_module(xp)


def check_environment():
    """The backend's name, or raise what a bad LORA_NP_BACKEND left: ValueError (unknown name) or
    BackendUnavailableError (cupy without CuPy or a GPU)."""
    if _environment_error is not None:
        kind, message = _environment_error
        raise kind(message)
    return _name


class _Unavailable:
    """What ``xp`` is while a bad LORA_NP_BACKEND is pending: any use raises its error."""

    def __getattr__(self, attribute):
        check_environment()


def get_backend():
    """The current backend's name: ``"numpy"`` or ``"cupy"``."""
    return check_environment()


def cupy_available():
    """True when the cupy backend can run here (CuPy importable and a CUDA device present)."""
    try:
        _load_cupy()
    except BackendUnavailableError:
        return False
    return True


def asarray(x, dtype=None):
    """``x`` as an array of the current backend (host data is copied to the device when needed)."""
    return xp.asarray(x, dtype=dtype)


def to_numpy(x):
    """A host (NumPy) copy of an array, or of a Tensor's ``.data``, whatever the backend."""
    if isinstance(x, np.ndarray):
        return np.array(x, copy=True)
    if hasattr(x, "get"):  # a cupy array
        return x.get()
    if hasattr(x, "data") and hasattr(x, "requires_grad"):  # a Tensor (no import of autograd here)
        return to_numpy(x.data)
    return np.array(x)


def index_add(target, index, values):
    """``target[index] += values`` with repeated indices summed (CuPy: atomic adds on the GPU)."""
    xp.add.at(target, index, values)
    return target


def synchronize():
    """Wait for the device to finish queued work (for honest timings); a no-op on NumPy."""
    if _name == "cupy":
        xp.cuda.Stream.null.synchronize()


def device_memory_in_use():
    """Bytes held by CuPy's memory pool (0 on NumPy, where tracemalloc measures instead)."""
    return int(xp.get_default_memory_pool().used_bytes()) if _name == "cupy" else 0


@contextlib.contextmanager
def using(array_module, name):
    """Run a block with another array module and a fresh device generator, both restored afterwards:
    the tests' stand-in device (tests/device_standin.py) and the course's checks (NumPy whatever the
    notebook's backend) use it."""
    global xp, _name
    saved = xp, _name
    xp, _name = array_module, name
    try:
        with generators.device_generator(array_module):
            yield array_module
    finally:
        xp, _name = saved


def _read_environment():
    global xp, _environment_error
    name = os.environ.get("LORA_NP_BACKEND", "").strip()
    if name:
        try:
            set_backend(name)
        except (ValueError, BackendUnavailableError) as exc:
            _environment_error = (type(exc), f"LORA_NP_BACKEND={name}: {exc}")
            xp = _Unavailable()
            generators.use_array_module(xp, reseed=False)  # so manual_seed raises the error too


_read_environment()
