"""CPU parallelism, applied from outside the kernels: the only place lora_np splits work.

A kernel is written once, on whole arrays, outputs first and then inputs, the way llm.c writes
``layernorm_forward(out, mean, rstd, inp, weight, bias, ...)``. This module runs it on blocks:

- ``parallel_for(n, body, grain)``: ``body(lo, hi)`` on blocks [lo, hi) of range(n), on all
  threads: llm.c's one ``#pragma omp parallel for`` line. ``for_rows`` is its common case, a kernel
  on blocks of rows of its arrays; ``map_blocks`` gives one block per thread and returns each
  block's result (partial sums to be combined).
- ``gemm(y, products, bias)``: y = Σₖ Aₖ Bₖ + b into an output. ``gemm_split`` (one rule) picks,
  by the GEMM's size, one BLAS call or one block per thread, along the rows of A or the columns
  of B: each thread reads its part of the bigger operand and packs the smaller one whole.
- ``run_tasks(tasks)``: independent kernels in one hand-off. ``gemm_tasks`` and ``row_tasks`` give
  the blocks of a GEMM and of a row kernel as tasks, so that an op with several outputs (a linear
  layer's dX, dW and db) hands its work to the other threads once, and a small kernel beside a big
  one runs while the big one does, instead of alone on one thread between two hand-offs.

NumPy releases the GIL inside its loops and BLAS calls, so the blocks really run in parallel;
each row (or column) of an output is computed exactly as without threads. On CuPy (or with one
thread) the kernel runs once on the whole arrays: the GPU is already parallel. The other threads
are helpers that sleep on a lock between ops (``_Helper``): a hand-off is cheap enough to split
each GEMV of a decode step. An op started while the helpers are busy (a block of an op that is
running, or another thread's op) runs all its blocks on its own thread.

While the blocks run, BLAS is limited to one thread (threadpoolctl, as a context), so that BLAS's
own threads do not fight ours for the cores, and the limit is given back when lora_np's call
returns: the user's process keeps its BLAS settings. Nothing here runs at import.
``forced_threads(n)`` (for tests) runs every op on n threads, split into blocks however small.
"""

import contextlib
import ctypes
import itertools
import os
import sys
import threading
from functools import partial

import numpy as np

from . import backend
from .checks import check_int

GRAIN = 1 << 16  # elements per block: big enough to amortise a task, small enough to stay in cache
SMALL_GEMM = 1 << 22  # multiply-adds below which a GEMM is one BLAS call: a hand-off costs more than it saves
SMALL_GEMV_WEIGHT = 1 << 20  # ... unless its weight (k·m) is this big: a few rows' time is reading the weight
GEMM_MIN_SIDE = 256  # rows (or columns) of a GEMM block below which BLAS runs at a fraction of its rate

_threads = None
_forced = False
_pools = {}
_helpers_free = threading.Lock()  # held while an op runs on the helper threads
_blas = None
_fork_hook = False


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


@contextlib.contextmanager
def forced_threads(n):
    """For tests: inside, lora_np runs on ``n`` threads and splits every op it can into blocks,
    however small (several rows each, every GEMM split), so that the threaded paths meet the
    references at test sizes. The thread count and the thresholds come back on exit."""
    global _threads, _forced
    saved = _threads, _forced
    _threads, _forced = check_int("threads", n, min=1), True
    try:
        yield
    finally:
        _threads, _forced = saved


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


def _threaded():
    return backend.xp is np and (_threads or thread_count()) > 1


def _edges(n, n_blocks):
    return [n * i // n_blocks for i in range(n_blocks + 1)]


def on_one_blas_thread(fn, /, *args, **kwargs):
    """``fn(*args, **kwargs)`` inside ``single_threaded_blas()``, without entering it again where it is
    already entered (generate and backward() enter it once, around all their ops) or has nothing to do:
    one Python call where a ``with`` costs three (a decode step runs a few hundred ops)."""
    if _single_threaded_blas.depth or not _threaded():
        return fn(*args, **kwargs)
    with _single_threaded_blas:
        return fn(*args, **kwargs)


def _run_blocks(edges, body):
    """``body(i, lo, hi)`` for every block i = [edges[i], edges[i+1]), on all threads, BLAS on one."""
    n_blocks = len(edges) - 1
    if n_blocks == 1:
        return on_one_blas_thread(body, 0, edges[0], edges[1])
    blocks = itertools.count()

    def drain():  # every thread, the caller included, takes the next block until none is left
        for i in iter(blocks.__next__, None):
            if i >= n_blocks:
                return
            body(i, edges[i], edges[i + 1])

    with single_threaded_blas():
        if not _helpers_free.acquire(blocking=False):  # a block of a running op, or another thread's op:
            return drain()                              # the helpers are taken, this thread does it all
        try:
            helpers = _helpers()[:min(thread_count(), n_blocks) - 1]
            for helper in helpers:
                helper.start(drain)
            try:
                drain()
            finally:
                errors = [helper.wait() for helper in helpers]  # every helper is done before anything is raised
        finally:
            _helpers_free.release()
        for error in errors:
            if error is not None:
                raise error


def run_tasks(tasks, size=None):
    """Call every task (a callable without arguments; they must not depend on one another) on all
    threads, in one hand-off: each thread takes the next task in order until none is left, so the
    big ones go first. On one thread or on CuPy they run in order on this one, and so they do when
    ``size``, the elements the tasks touch in all, if given, is under 2·GRAIN (a hand-off would cost
    more than it saves)."""
    if not tasks:
        return
    if len(tasks) == 1:
        return on_one_blas_thread(tasks[0])
    if not _threaded() or (size is not None and size < 2 * GRAIN and not _forced):
        with single_threaded_blas():
            for task in tasks:
                task()
        return
    _run_blocks(list(range(len(tasks) + 1)), lambda i, lo, hi: tasks[i]())


def blocks(n, grain=1):
    """The blocks [lo, hi) of range(n) that ``parallel_for`` runs: about ``grain`` long each (at
    least one per thread); one block when n < 2·grain (or on CuPy)."""
    if backend.xp is not np or n < 2 or (n < 2 * grain and not _forced):
        return [(0, n)]
    threads = thread_count()  # on one thread too, the blocks stay cache-sized
    n_blocks = min(n, 2 * threads + 1) if _forced else max(threads, -(-n // grain))
    edges = _edges(n, n_blocks)
    return list(zip(edges[:-1], edges[1:]))


def parallel_for(n, body, grain=1):
    """``body(lo, hi)`` on blocks [lo, hi) that cover range(n), each about ``grain`` long (at least
    one block per thread), run on all threads; one call ``body(0, n)`` when n < 2·grain (or on CuPy)."""
    run_tasks([partial(body, lo, hi) for lo, hi in blocks(n, grain)])


def map_blocks(n, fn, grain=1):
    """[fn(lo, hi) for one block [lo, hi) of range(n) per thread], the blocks run in parallel: partial
    results (sums, maxima) for the caller to combine. One block when n < 2·grain."""
    threads = thread_count()
    if not _threaded() or n < 2 or (n < 2 * grain and not _forced):
        n_blocks = 1
    else:
        n_blocks = min(n, threads + 1) if _forced else min(threads, n // grain)
    results = [None] * n_blocks

    def body(i, lo, hi):
        results[i] = fn(lo, hi)

    _run_blocks(_edges(n, n_blocks), body)
    return results


def for_rows(kernel, rows, shared=(), grain=None):
    """``kernel(*rows, *shared)``, run as ``kernel(*(a[lo:hi] for a in rows), *shared)`` on blocks
    [lo, hi) of the rows' first axis, on all threads.

    ``rows``: arrays (or None) that share their first axis: outputs and per-row inputs. ``shared``:
    everything passed whole (weights, scalars). ``grain``: rows per block; by default a block of
    ``rows[0]`` holds about GRAIN elements, and below 2·GRAIN elements in all (a decode step's few
    rows) the kernel is called once, on the whole arrays, with no task list.
    """
    if grain is None and rows[0].size < 2 * GRAIN and not _forced:
        return on_one_blas_thread(kernel, *rows, *shared)
    run_tasks(row_tasks(kernel, rows, shared, grain))


def row_tasks(kernel, rows, shared=(), grain=None):
    """``for_rows``'s blocks as tasks for ``run_tasks``."""
    n = rows[0].shape[0]
    if grain is None:
        grain = max(1, GRAIN * n // max(rows[0].size, 1))
    spans = blocks(n, grain)
    if len(spans) == 1:
        return [partial(kernel, *rows, *shared)]
    return [partial(kernel, *[None if a is None else a[lo:hi] for a in rows], *shared) for lo, hi in spans]


def add(out, a, b):
    """out = a + b (NumPy's add; ``out`` may be ``a`` or ``b``), on a block of the flattened arrays per
    thread when all three have one shape and dtype, are contiguous and hold at least 8·GRAIN
    elements (a residual connection's sum, a gradient summed from two branches; at 4·GRAIN, the
    learner's 128-wide shape, a hand-off saved about what it cost); else one call."""
    xp = backend.xp
    big = out.size >= 8 * GRAIN or (_forced and out.size > 1)
    if not (big and _threaded() and a.shape == b.shape == out.shape and a.dtype == b.dtype == out.dtype
            and all(x.flags.c_contiguous for x in (out, a, b))):
        return xp.add(a, b, out=out)
    flat = [x.reshape(-1) for x in (a, b, out)]
    run_tasks(row_tasks(xp.add, flat, grain=max(GRAIN, -(-out.size // thread_count()))))
    return out


def gemm_split(n, k, m):
    """The one rule for how a GEMM (n, k) @ (k, m) runs: None (one BLAS call, on one thread), or
    "rows" / "columns" of the (n, m) output, one or two blocks per thread (``_gemm_blocks``).

    Below SMALL_GEMM multiply-adds a hand-off to another thread costs more than it saves. Above
    it, the longer side of the output is split: each thread then reads its part of the bigger
    operand and packs the smaller one whole (a weight bigger than the activations is split by
    its columns, so it is read, and packed by BLAS, once in all, not once per block of rows).
    A GEMM of a few rows (a decode step's GEMV, n = 1) does few multiply-adds but reads its whole
    (k, m) weight from memory: from SMALL_GEMV_WEIGHT weight elements on, its columns are split too,
    so that each thread streams half of the weight (one core alone does not reach the memory's
    bandwidth). On the idle 2-core AMD EPYC, greedy decoding (``benchmarks/bench_gemv_split.py``,
    2026-12-07) ran at 9.9 / 13.2 / 13.0 / 12.9 tokens/s at SmolLM2-135M's shape with this threshold
    at 2¹⁸ / 2²⁰ / 2²² / never, and 4.9 / 5.1 / 4.7 / 4.7 at Qwen3-0.6B's: a hand-off pays from
    about a million weights. BLAS's own threads are never the choice inside lora_np: between two GEMMs they would
    spin against the elementwise kernels on our threads, and on a shared machine they slow a GEMM
    down several times (``python benchmarks/bench_train.py --gemm``: benchmarks/results.md).
    """
    if not _forced and n * k * m < SMALL_GEMM and k * m < SMALL_GEMV_WEIGHT:  # (checked first: most GEMVs)
        return None
    if not _threaded() or (not _forced and max(n, m) < 2 * thread_count()):
        return None
    return "rows" if n >= m else "columns"


def gemm_kernel(y, products, bias):
    """y = Σₖ Aₖ Bₖ + b (BLAS), on whole arrays or on one block of them."""
    (a, b), *more = products
    backend.xp.matmul(a, b, out=y)
    for a, b in more:
        y += a @ b
    if bias is not None:
        y += bias


def gemm(y, products, bias=None):
    """y = Σₖ Aₖ Bₖ + b into the (n, m) array y, for ``products`` ((A₁, B₁), ...) with Aₖ (n, kₖ),
    Bₖ (kₖ, m), and b (m,) or None; split as ``gemm_split`` says (unsplit: one call, no task list).
    Returns y."""
    if gemm_split(y.shape[0], products[0][0].shape[1], y.shape[1]) is None:
        on_one_blas_thread(gemm_kernel, y, products, bias)
    else:
        run_tasks(gemm_tasks(y, products, bias))
    return y


def gemm_tasks(y, products, bias=None):
    """``gemm``'s blocks as tasks for ``run_tasks`` (one task when ``gemm_split`` keeps it whole)."""
    (n, m), split = y.shape, gemm_split(y.shape[0], products[0][0].shape[1], y.shape[1])
    if split is None:
        return [partial(gemm_kernel, y, products, bias)]
    edges = _edges(*(n, _gemm_blocks(n)) if split == "rows" else (m, _gemm_blocks(m)))
    if split == "rows":
        return [partial(gemm_kernel, y[lo:hi], [(a[lo:hi], b) for a, b in products], bias)
                for lo, hi in zip(edges[:-1], edges[1:])]
    return [partial(gemm_kernel, y[:, lo:hi], [(a, b[:, lo:hi]) for a, b in products],
                    None if bias is None else bias[lo:hi]) for lo, hi in zip(edges[:-1], edges[1:])]


def _gemm_blocks(n):
    """Blocks of a GEMM's split side of length n: one per thread. Each block of a split GEMM packs
    the other operand again, so more blocks cost BLAS time: two per thread (so that a thread the OS
    pauses would hold back a quarter of the work, not half) took 7% more CPU time per step at M
    than one per thread, and more wall time too, on the shared 2-core machine (interleaved,
    2026-12-07). A linear layer's backward runs dW's and dX's blocks in one hand-off, so a late
    thread still finds work there."""
    return min(n, thread_count() + 1) if _forced else thread_count()


def matmul(a, b):
    """``a @ b`` into a new array; a 2-D product through ``gemm``, a batched one as one NumPy call."""
    if a.ndim != 2 or b.ndim != 2:
        return on_one_blas_thread(backend.xp.matmul, a, b)
    return gemm(backend.xp.empty((a.shape[0], b.shape[1]), dtype=np.result_type(a.dtype, b.dtype)), ((a, b),))


class _Helper:
    """One helper thread of ``_run_blocks``: it sleeps on a lock until ``start(task)`` releases it,
    runs the task, and releases a second lock that ``wait()`` takes. A hand-off is two lock releases
    and two wake-ups, no Future or queue (a decode step hands off a few hundred GEMVs per token)."""

    def __init__(self, name):
        self._wake, self._done = threading.Lock(), threading.Lock()
        self._wake.acquire()
        self._done.acquire()
        self._task = self._error = None
        threading.Thread(target=self._serve, name=name, daemon=True).start()

    def _serve(self):
        while True:
            self._wake.acquire()
            try:
                self._task()
            except BaseException as exc:  # handed to the caller by wait()
                self._error = exc
            self._task = None
            self._done.release()

    def start(self, task):
        self._task = task
        self._wake.release()

    def wait(self):
        """Blocks until the task has run; returns the exception it raised, or None."""
        self._done.acquire()
        error, self._error = self._error, None
        return error


def _helpers():
    """thread_count() - 1 helper threads, started at the first parallel op (never at import); a
    forked child starts its own (the parent's threads do not exist there)."""
    global _fork_hook
    n = thread_count() - 1
    if n not in _pools:
        if not _fork_hook:
            _fork_hook = True
            os.register_at_fork(after_in_child=_forget_helpers)
        _pools[n] = [_Helper(f"lora_np_{i}") for i in range(n)]
    return _pools[n]


def _forget_helpers():
    global _helpers_free
    _pools.clear()
    _helpers_free = threading.Lock()


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
