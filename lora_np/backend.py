"""The one array-module switch, NumPy on the CPU or CuPy on an NVIDIA GPU, and the random generators.

Every other module writes ``backend.xp.zeros(...)``, reading the attribute at call time, so
``set_backend("cupy")`` moves the whole library to the GPU. This is the only module that imports cupy.
``LORA_NP_BACKEND=numpy|cupy`` picks the backend at import. A bad value never breaks the import: it
is raised at the first use of ``backend.xp`` (as JAX does with JAX_PLATFORMS), so a user who asked
for the GPU never silently computes on the CPU; ``check_environment()`` raises it up front.

Two generators, both reset by :func:`manual_seed`: the *host* one (NumPy) draws initial weights, the
same on either backend; the *device* one draws dropout masks and samples tokens on the device.
"""

import contextlib
import os

import numpy as np

from .checks import check_int

BACKENDS = ("numpy", "cupy")
GPU_INSTALL_HINT = "pip install -r requirements-gpu.txt  (installs cupy-cuda12x; needs an NVIDIA GPU with CUDA 12)"

xp = np  # the array module of the current backend
_name = "numpy"
_seed = 0
_host_rng = np.random.default_rng(0)
_device_rng = np.random.default_rng(1)
_environment_error = None  # (exception class, message) from a bad LORA_NP_BACKEND, raised at first use


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run on this machine (e.g. cupy without a CUDA GPU)."""


def _load_cupy():
    try:
        import cupy
    except ImportError:
        raise BackendUnavailableError(f"the 'cupy' backend needs CuPy, which is not installed: {GPU_INSTALL_HINT}") from None
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
    manual_seed(_seed)


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


def manual_seed(seed):
    """Seed the host generator (initialisation) and the device generator (dropout, sampling)."""
    global _seed, _host_rng, _device_rng
    _seed = check_int("seed", seed, min=0)
    host_seq, device_seq = np.random.SeedSequence(_seed).spawn(2)
    _host_rng = np.random.default_rng(host_seq)
    _device_rng = xp.random.default_rng(int(device_seq.generate_state(1)[0]))


def host_rng():
    """The NumPy generator used for parameter initialisation (same numbers on every backend)."""
    return _host_rng


def rng():
    """The generator of the current backend (dropout masks, token sampling)."""
    return _device_rng


def get_rng_state():
    """Both generators' states as plain JSON-able dicts (for checkpoints)."""
    state = {"seed": _seed, "host": _host_rng.bit_generator.state}
    if _name == "numpy":
        state["device"] = _device_rng.bit_generator.state
    return state


def set_rng_state(state):
    """Restore what :func:`get_rng_state` returned."""
    manual_seed(state["seed"])
    _host_rng.bit_generator.state = state["host"]
    if _name == "numpy" and "device" in state:
        _device_rng.bit_generator.state = state["device"]


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
    """Run a block with a stand-in array module (tests use it to check that nothing bypasses ``xp``)."""
    global xp, _name, _device_rng
    saved = xp, _name, _device_rng
    xp, _name = array_module, name
    _device_rng = array_module.random.default_rng(_seed)
    try:
        yield array_module
    finally:
        xp, _name, _device_rng = saved


def _read_environment():
    global xp, _environment_error
    name = os.environ.get("LORA_NP_BACKEND", "").strip()
    if name:
        try:
            set_backend(name)
        except (ValueError, BackendUnavailableError) as exc:
            _environment_error = (type(exc), f"LORA_NP_BACKEND={name}: {exc}")
            xp = _Unavailable()


_read_environment()
