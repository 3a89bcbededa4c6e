"""CPU parallelism, applied from outside the kernels: one thread pool and one helper, ``for_rows``.

A kernel is written once, on whole arrays, outputs first and then inputs, the way llm.c writes
``layernorm_forward(out, mean, rstd, inp, weight, bias, ...)``. When rows are independent (a row
of a GEMM's output, a token's layer norm, a batch item's attention), ``for_rows`` runs the same
kernel on blocks of rows in all threads: llm.c's one ``#pragma omp parallel for`` line. NumPy
releases the GIL inside its loops and BLAS calls, so the blocks really run in parallel; a block
small enough to stay in cache makes a chain of passes over it cheap; and each row is computed
exactly as without threads, so the result is bit-identical. On CuPy (or with one thread) the
kernel runs once on the whole arrays: the GPU is already parallel.

While the pool runs, BLAS is limited to one thread (threadpoolctl, as a context), so that BLAS's
own threads do not fight ours for the cores, and the limit is given back when lora_np's call
returns: the user's process keeps its BLAS settings. Nothing here runs at import.
"""

import contextlib
import ctypes
import itertools
import os
import sys

import numpy as np

from . import backend
from .checks import check_int

GRAIN = 1 << 16  # elements per block: big enough to amortise a task, small enough to stay in cache

_threads = None
_pool = None
_blas = None


def thread_count():
    """Threads lora_np uses on the CPU: LORA_NP_NUM_THREADS, else the cores this process may use."""
    global _threads
    if _threads is None:
        env = os.environ.get("LORA_NP_NUM_THREADS", "").strip()
        if env:
            _threads = check_int("LORA_NP_NUM_THREADS", int(env) if env.isdigit() else env, min=1)
        else:
            _threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return _threads


class _SingleThreadedBlas:
    """Reentrant: the outermost ``with`` sets BLAS to one thread, its exit restores what was there."""

    depth, saved = 0, ()

    def __enter__(self):
        global _blas
        if self.depth == 0:
            if _blas is None:  # threadpoolctl scans the loaded libraries once (it takes a while)
                try:
                    from threadpoolctl import ThreadpoolController
                    _blas = ThreadpoolController().select(user_api="blas").lib_controllers
                except ImportError:  # without threadpoolctl, BLAS is left alone
                    _blas = []
            self.saved = [(lib, lib.num_threads) for lib in _blas]
            for lib, n in self.saved:
                if n != 1:
                    lib.set_num_threads(1)
        self.depth += 1

    def __exit__(self, *exc):
        self.depth -= 1
        if self.depth == 0:
            for lib, n in self.saved:
                if n != 1:
                    lib.set_num_threads(n)


_single_threaded_blas = _SingleThreadedBlas()


def single_threaded_blas():
    """A context in which BLAS runs on one thread (when lora_np runs threads of its own), so that
    BLAS's threads do not fight ours; on exit BLAS gets back the threads it had. Nested uses cost
    nothing: autograd enters it once around a whole backward pass."""
    if backend.xp is not np or thread_count() == 1:
        return contextlib.nullcontext()
    return _single_threaded_blas


def _runs_threaded(n_rows, grain):
    return backend.xp is np and thread_count() > 1 and n_rows >= 2 * grain


def for_rows(kernel, rows, shared=(), grain=None):
    """``kernel(*rows, *shared)``, run as ``kernel(*(a[lo:hi] for a in rows), *shared)`` on blocks
    [lo, hi) of the rows' first axis, on all threads.

    ``rows``: arrays (or None) that share their first axis: outputs and per-row inputs. ``shared``:
    everything passed whole (weights, scalars). ``grain``: rows per block; by default a block of
    ``rows[0]`` holds about GRAIN elements.
    """
    n = rows[0].shape[0]
    if grain is None:
        grain = max(1, GRAIN * n // max(rows[0].size, 1))
    if not _runs_threaded(n, grain):
        with single_threaded_blas():
            kernel(*rows, *shared)
        return
    n_blocks = max(thread_count(), -(-n // grain))
    edges = [n * i // n_blocks for i in range(n_blocks + 1)]
    blocks = itertools.count()

    def drain():  # every thread, the caller included, takes the next block until none is left
        for i in iter(blocks.__next__, None):
            if i >= n_blocks:
                return
            lo, hi = edges[i], edges[i + 1]
            kernel(*(None if a is None else a[lo:hi] for a in rows), *shared)

    with single_threaded_blas():
        futures = [_thread_pool().submit(drain) for _ in range(thread_count() - 1)]
        try:
            drain()
        finally:
            for f in futures:
                f.result()


def _thread_pool():
    global _pool
    if _pool is None:
        from concurrent.futures import ThreadPoolExecutor
        _pool = ThreadPoolExecutor(max_workers=thread_count() - 1, thread_name_prefix="lora_np")
    return _pool


def matmul_kernel(y, a, b):
    """y = a b (BLAS)."""
    backend.xp.matmul(a, b, out=y)


def matmul(a, b):
    """``a @ b``; for big 2-D operands, computed in row blocks of the output, one BLAS call per block
    (a thin product, like LoRA's rank-r ones, is faster as one call)."""
    if a.ndim != 2 or b.ndim != 2:
        with single_threaded_blas():
            return a @ b
    rows = a.shape[0]
    small = min(rows, b.shape[1]) < 32 or rows * a.shape[1] * b.shape[1] < (1 << 21)
    y = backend.xp.empty((rows, b.shape[1]), dtype=np.result_type(a.dtype, b.dtype))
    for_rows(matmul_kernel, (y, a), (b,), grain=rows if small else rows // thread_count())
    return y


def tune_host_allocator():
    """Opt-in (the CLI and the benchmarks call it): let glibc keep freed NumPy buffers for reuse.

    A training step allocates and frees the same large activation and gradient arrays every time.
    By default glibc unmaps each one on free and the next step pays page faults to map it again;
    raising the mmap and trim thresholds makes the second step reuse the first step's memory (a
    training step here runs ~1.5x faster). It changes the whole process's allocator, so a library
    must not do it on import. Linux/glibc only; returns True if applied.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 1 << 30))
