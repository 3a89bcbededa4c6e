"""The one array-module switch: NumPy on the CPU, CuPy on an NVIDIA GPU.

Every other module writes ``backend.xp.zeros(...)``, ``backend.xp.exp(...)`` and so on, reading
the attribute at call time, so ``set_backend("cupy")`` moves the whole library to the GPU without
another line changing. This is the only module that imports cupy.

Random numbers come from two generators, both reset by :func:`manual_seed`:

* the *host* generator (NumPy) draws parameter initialisations, so a model built with the same seed
  has the same weights on either backend;
* the *device* generator (of the current backend) draws dropout masks and samples tokens, so no
  host-to-device copy happens inside the training loop.
"""

import contextlib
import ctypes
import itertools
import os
import sys

import numpy as np

from .checks import check_int

BACKENDS = ("numpy", "cupy")
GPU_INSTALL_HINT = "pip install -r requirements-gpu.txt  (installs cupy-cuda12x; needs an NVIDIA GPU with CUDA 12)"

xp = np  # the array module of the current backend
_name = "numpy"
_seed = 0
_host_rng = np.random.default_rng(0)
_device_rng = np.random.default_rng(1)


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


def _check_name(name):
    if not isinstance(name, str) or name.strip().lower() not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; accepted: 'numpy', 'cupy'")
    return name.strip().lower()


def set_backend(name):
    """Switch every array computation to ``"numpy"`` (CPU) or ``"cupy"`` (GPU).

    Tensors made before the switch keep their arrays; make models after switching (or load them).
    Re-seeds both generators with the last seed given to :func:`manual_seed`.
    """
    global xp, _name
    name = _check_name(name)
    xp = _load_cupy() if name == "cupy" else np
    _name = name
    manual_seed(_seed)


def get_backend():
    """The current backend's name: ``"numpy"`` or ``"cupy"``."""
    return _name


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


def is_array(x):
    """True for an array of the current backend."""
    return isinstance(x, xp.ndarray)


def asarray(x, dtype=None):
    """``x`` as an array of the current backend (host data is copied to the device when needed)."""
    return xp.asarray(x, dtype=dtype)


def to_numpy(x):
    """A host (NumPy) copy of an array or Tensor, whatever the backend."""
    from .autograd import Tensor
    if isinstance(x, Tensor):
        x = x.data
    if isinstance(x, np.ndarray):
        return np.array(x, copy=True)
    if hasattr(x, "get"):  # a cupy array
        return x.get()
    return np.array(x)


def scatter_add_rows(target, rows, values):
    """``target[rows[i]] += values[i]`` for every i, duplicates summed (an embedding's backward).

    NumPy: sort the row ids, sum each run of equal ids with ``add.reduceat`` and add the sums
    once per distinct row, a few fast vectorised passes instead of ``np.add.at``'s per-element loop.
    CuPy: ``cupyx.scatter_add``, which uses atomic adds on the GPU.
    """
    if _name == "cupy":
        import cupyx
        cupyx.scatter_add(target, rows, values)
        return target
    order = xp.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    starts = xp.flatnonzero(xp.concatenate([xp.ones(1, dtype=bool), sorted_rows[1:] != sorted_rows[:-1]]))
    target[sorted_rows[starts]] += xp.add.reduceat(values[order], starts, axis=0)
    return target


def index_add(target, index, values):
    """``target[index] += values`` with repeated indices summed, for any NumPy-style index."""
    if _name == "cupy":
        import cupyx
        cupyx.scatter_add(target, index, values)
    else:
        xp.add.at(target, index, values)
    return target


def _thread_count():
    env = os.environ.get("LORA_NP_NUM_THREADS", "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise ValueError(f"LORA_NP_NUM_THREADS must be a positive integer; got {env!r}")
        return int(env)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _own_the_cores(threads):
    """With more than one thread, lora_np runs BLAS single-threaded and splits the work itself.

    OpenBLAS's worker threads spin for a while after every call; a second pool of threads (ours,
    for the elementwise kernels) would then fight them for the cores and both would slow down.
    One pool for everything avoids that: GEMMs are split into row blocks (``matmul`` below), each
    a single-threaded BLAS call, as fast as OpenBLAS's own threading on these shapes.
    """
    if threads == 1:
        return 1
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # without threadpoolctl, leave BLAS alone and run our kernels on one thread
        return 1
    threadpool_limits(limits=1, user_api="blas")
    return threads


_threads = _own_the_cores(_thread_count())
_pool = None
GRAIN = 1 << 16  # elements per block: big enough to amortise a task, small enough to stay in cache


def parallel_for(n, fn, grain=GRAIN):
    """Call ``fn(lo, hi)`` over ``range(n)`` in blocks of at least ``grain``, on all cores.

    NumPy releases the GIL inside its ufunc loops, so blocks of an elementwise or row-wise kernel
    run in parallel threads, and a block small enough to stay in cache makes a chain of passes
    over it cheap. Each element (or row) is computed exactly as without threads: the result is
    bit-identical. CuPy already runs on the whole GPU, so there ``fn(0, n)`` runs once.
    """
    global _pool
    if xp is not np or _threads == 1 or n < 2 * grain:
        fn(0, n)
        return
    if _pool is None:
        from concurrent.futures import ThreadPoolExecutor
        _pool = ThreadPoolExecutor(max_workers=_threads - 1, thread_name_prefix="lora_np")
    n_blocks = max(_threads, -(-n // grain))
    edges = [n * i // n_blocks for i in range(n_blocks + 1)]
    counter = itertools.count()

    def drain():  # every thread, the caller included, takes the next block until none is left
        for i in iter(counter.__next__, None):
            if i >= n_blocks:
                return
            fn(edges[i], edges[i + 1])

    futures = [_pool.submit(drain) for _ in range(_threads - 1)]
    try:
        drain()
    finally:
        for f in futures:
            f.result()


def matmul(a, b, out=None):
    """``a @ b`` for 2-D arrays; on NumPy, big products are split into row blocks of the output,
    one single-threaded BLAS call per thread (see ``_own_the_cores``)."""
    rows = a.shape[0]
    if (xp is not np or _threads == 1 or a.ndim != 2 or b.ndim != 2 or rows < 2 * _threads
            or rows * a.shape[1] * b.shape[1] < (1 << 21)):
        return xp.matmul(a, b, out=out)
    if out is None:
        out = np.empty((rows, b.shape[1]), dtype=np.result_type(a.dtype, b.dtype))
    parallel_for(rows, lambda lo, hi: np.matmul(a[lo:hi], b, out=out[lo:hi]), grain=-(-rows // _threads))
    return out


def ignore_overflow():
    """A context in which an overflow to inf raises no warning (NumPy warns; CuPy never does)."""
    return np.errstate(over="ignore") if xp is np else contextlib.nullcontext()


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


def tune_host_allocator():
    """Let glibc keep freed NumPy buffers for reuse instead of returning them to the OS at once.

    A training step allocates and frees the same large activation and gradient arrays every time.
    By default glibc unmaps each one on free and the next step pays page faults to map it again;
    raising the mmap and trim thresholds makes the second step reuse the first step's memory (a
    training step here runs ~1.5x faster). Linux/glibc only; LORA_NP_MALLOC_TUNING=0 turns it off.
    Returns True if applied.
    """
    if os.environ.get("LORA_NP_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 1 << 30))


def _init_from_environment():
    name = os.environ.get("LORA_NP_BACKEND", "").strip()
    if name:
        set_backend(name)


tune_host_allocator()
_init_from_environment()
