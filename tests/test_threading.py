"""lora_np/parallel.py: the one place that splits work.

Oracles: plain NumPy (``a @ b + bias``, ``range(n)``) for the helpers; for the whole model, the
same float64 training step on one thread: two threads must agree with it to float64 rounding
(the blocks change which BLAS call computes an entry, not the math). ``forced_threads`` makes the
helpers split at these small sizes, so the threaded paths really run.
"""

import os
import signal
import threading
import time

import numpy as np
import pytest

import lora_np
from lora_np import GPT, GPTConfig, LoraConfig, add_lora, parallel, to_numpy
from lora_np.quant import QuantWeight, quant_linear


def test_parallel_for_covers_the_range_once_in_several_blocks():
    seen, lock = [], threading.Lock()

    def body(lo, hi):
        with lock:
            seen.append((lo, hi))

    with parallel.forced_threads(2):
        parallel.parallel_for(23, body)
    assert len(seen) > 2
    assert sorted(i for lo, hi in seen for i in range(lo, hi)) == list(range(23))


def test_parallel_for_keeps_small_work_in_one_call():
    seen = []
    parallel.parallel_for(100, lambda lo, hi: seen.append((lo, hi)), grain=64)
    assert seen == [(0, 100)]
    parallel.parallel_for(100, lambda lo, hi: seen.append((lo, hi)), grain=10)  # on one thread too: blocks
    assert len(seen) > 2 and sorted(i for lo, hi in seen[1:] for i in range(lo, hi)) == list(range(100))


def test_map_blocks_returns_one_result_per_block_in_order():
    with parallel.forced_threads(2):
        parts = parallel.map_blocks(10, lambda lo, hi: list(range(lo, hi)))
    assert len(parts) > 1
    assert sum(parts, []) == list(range(10))
    assert parallel.map_blocks(10, lambda lo, hi: (lo, hi), grain=64) == [(0, 10)]


@pytest.mark.parametrize("n, m", [(40, 7), (3, 50), (9, 9)], ids=["rows", "columns", "square"])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_gemm_is_the_sum_of_products_plus_bias(n, m, threads, rng):
    a1, b1 = rng.standard_normal((n, 5)), rng.standard_normal((5, m))
    a2, b2 = rng.standard_normal((n, 2)), rng.standard_normal((2, m))
    bias = rng.standard_normal(m)
    with parallel.forced_threads(threads):
        y = parallel.gemm(np.empty((n, m)), ((a1, b1), (a2.T.copy().T, b2)), bias)  # any strides
        y_t = parallel.matmul(a1.T.copy().T, b1)
    np.testing.assert_allclose(y, a1 @ b1 + a2 @ b2 + bias, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(y_t, a1 @ b1, rtol=1e-13, atol=1e-13)


def test_run_tasks_runs_each_task_once_and_keeps_small_work_here():
    done, lock = [], threading.Lock()

    def task(i):
        with lock:
            done.append((i, threading.get_ident()))

    with parallel.forced_threads(2):
        parallel.run_tasks([lambda i=i: task(i) for i in range(9)])
    assert sorted(i for i, _ in done) == list(range(9))
    done.clear()
    parallel.run_tasks([lambda i=i: task(i) for i in range(3)], size=10)  # under 2·GRAIN: on this thread, in order
    assert done == [(i, threading.get_ident()) for i in range(3)]


def test_a_decode_steps_small_kernels_run_once_here_on_the_whole_arrays(rng):
    """Under 2·GRAIN elements a row kernel is called once, on the whole arrays, on the calling thread
    (no blocks, no task list), and an unsplit GEMM is one BLAS call there: each still equals NumPy."""
    calls = []

    def kernel(y, x, w):
        calls.append((threading.get_ident(), x.shape))
        np.multiply(x, w, out=y)

    x, w, weight = rng.standard_normal((3, 576)), rng.standard_normal(576), rng.standard_normal((576, 1536))
    y = np.empty_like(x)
    with parallel.forced_threads(2):
        parallel._forced = False  # two threads, the real thresholds
        assert parallel.gemm_split(1, 576, 1536) is None
        parallel.for_rows(kernel, (y, x), (w,))
        g = parallel.gemm(np.empty((1, 1536)), ((x[:1], weight),))
    assert calls == [(threading.get_ident(), (3, 576))]
    np.testing.assert_array_equal(y, x * w)
    np.testing.assert_array_equal(g, x[:1] @ weight)


@pytest.mark.parametrize("threads", [1, 2])
def test_add_equals_numpy_in_place_and_broadcast(threads, rng):
    a, b = rng.standard_normal((7, 5)), rng.standard_normal((7, 5))
    c, d = a.copy(), a.copy()
    with parallel.forced_threads(threads):
        y = parallel.add(np.empty_like(a), a, b)
        parallel.add(c, c, b)                 # in place
        parallel.add(d, d, b[0])              # broadcast: one NumPy call
    np.testing.assert_array_equal(y, a + b)
    np.testing.assert_array_equal(c, a + b)
    np.testing.assert_array_equal(d, a + b[0])


def test_gemm_split_is_one_rule_by_size():
    with parallel.forced_threads(2):
        assert parallel.gemm_split(64, 8, 8) == "rows"
        assert parallel.gemm_split(8, 8, 64) == "columns"
    threads = parallel.thread_count()
    if threads > 1:
        assert parallel.gemm_split(4, 4, 4) is None                       # a hand-off costs more
        assert parallel.gemm_split(4096, 1024, 256) == "rows"              # activations bigger than the weight
        assert parallel.gemm_split(16, 1024, 4096) == "columns"           # a weight bigger than the activations
    with parallel.forced_threads(1):
        assert parallel.gemm_split(4096, 1024, 256) is None


def test_a_gemv_with_a_big_weight_is_split_by_columns():
    """A decode step's GEMV (one row) reads its whole weight: from SMALL_GEMV_WEIGHT elements on its
    columns are split although it does few multiply-adds; a small weight stays one BLAS call."""
    if parallel.thread_count() > 1:
        assert parallel.gemm_split(1, 1024, 3072) == "columns"   # Qwen3-0.6B's gate_proj
        assert parallel.gemm_split(1, 576, 1536) is None         # SmolLM2's: a hand-off costs more than it saves
        assert parallel.gemm_split(1, 64, 64) is None
    with parallel.forced_threads(1):
        assert parallel.gemm_split(1, 1024, 3072) is None


def test_an_op_inside_a_block_runs_on_its_own_thread_and_errors_reach_the_caller(rng):
    """A block that runs a parallel op itself (the helpers are busy) computes it on its own thread,
    without deadlock; an exception raised on a helper comes back to the caller, and the helpers serve
    the next op."""
    a, b = rng.standard_normal((6, 5)), rng.standard_normal((5, 8))
    results = {}

    def body(lo, hi):
        results[lo] = parallel.gemm(np.empty((6, 8)), ((a, b),))

    helper_ran = threading.Event()

    def fail(lo, hi):
        if threading.current_thread() is threading.main_thread():
            helper_ran.wait(timeout=10)  # so that the helper takes a block
        else:
            helper_ran.set()
            raise KeyError("from a helper")

    with parallel.forced_threads(2):
        parallel.parallel_for(4, body)
        with pytest.raises(KeyError, match="from a helper"):
            parallel.parallel_for(4, fail)
        assert helper_ran.is_set()
        y = parallel.gemm(np.empty((6, 8)), ((a, b),))
    assert len(results) > 1
    for got in [y, *results.values()]:
        np.testing.assert_allclose(got, a @ b, rtol=1e-13, atol=1e-13)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_starts_its_own_helpers():
    """The parent's helper threads do not exist in a forked child: its first op starts new ones
    (waiting on the parent's would hang)."""
    with parallel.forced_threads(2):
        parallel.parallel_for(4, lambda lo, hi: None)  # the parent's helpers exist
        pid = os.fork()
        if pid == 0:  # the child
            seen = []
            parallel.parallel_for(4, lambda lo, hi: seen.append((lo, hi)))
            os._exit(0 if sorted(seen)[0][0] == 0 and len(seen) == 4 else 1)
    for _ in range(200):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child's parallel op hung")
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_forced_threads_comes_back_and_checks_its_argument():
    before = parallel.thread_count(), parallel.gemm_split(4, 4, 4)
    with parallel.forced_threads(3):
        assert parallel.thread_count() == 3
        with parallel.forced_threads(1):
            assert parallel.thread_count() == 1
        assert parallel.thread_count() == 3
    assert (parallel.thread_count(), parallel.gemm_split(4, 4, 4)) == before
    with pytest.raises((TypeError, ValueError), match="threads"):
        with parallel.forced_threads(0):
            pass


def _step(lora, dropout, dtype=np.float64):
    """Loss and every trainable gradient of one float64 step of a tiny GPT (dropout seeded)."""
    lora_np.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=37, block_size=12, n_layer=2, n_head=2, n_embd=16, dropout=dropout),
                dtype=dtype)
    if lora:
        add_lora(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, use_dora=lora == "dora",
                                   target_modules=["c_attn", "c_proj", "c_fc"]))
        for p in model.parameters():
            if p.requires_grad:
                p.data += 0.05  # a trained adapter, so that B ≠ 0
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 37, size=(3, 12)), rng.integers(0, 37, size=(3, 12))
    _, loss = model(x, y)
    loss.backward()
    return loss.item(), {n: to_numpy(p.grad) for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("lora", [None, "lora", "dora"])
@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_one_and_two_threads_agree_to_float64_rounding(lora, dropout):
    with parallel.forced_threads(1):
        loss_1, grads_1 = _step(lora, dropout)
    with parallel.forced_threads(2):
        loss_2, grads_2 = _step(lora, dropout)
    assert loss_2 == pytest.approx(loss_1, rel=1e-13)
    assert grads_1.keys() == grads_2.keys()
    for name in grads_1:
        np.testing.assert_allclose(grads_2[name], grads_1[name], rtol=1e-11, atol=1e-14, err_msg=name)


def test_quantized_bands_agree_across_thread_counts(rng):
    qweight = QuantWeight.from_float(rng.standard_normal((64, 48)).astype(np.float32), "nf4", block_size=16)
    x_data = rng.standard_normal((5, 64)).astype(np.float32)
    results = []
    for threads in (1, 2):
        x = lora_np.Tensor(x_data, requires_grad=True)
        with parallel.forced_threads(threads):
            y = quant_linear(x, qweight)
            y.backward(np.ones(y.shape, dtype=np.float32))
        results.append((to_numpy(y), to_numpy(x.grad)))
    for one, two in zip(*results):  # float32: other band widths, other rounding
        np.testing.assert_allclose(two, one, rtol=1e-5, atol=1e-5)


def test_a_module_call_passes_every_keyword_to_its_forward():
    """Module.__call__ runs forward through on_one_blas_thread(fn, /, ...): a forward's own keyword
    named ``fn`` (or anything else) reaches it, on one thread and on two."""
    from lora_np.nn import Module

    class Apply(Module):
        def forward(self, x, fn=None, scale=1):
            return fn(x) * scale

    for threads in (1, 2):
        with parallel.forced_threads(threads):
            assert Apply()(3, fn=lambda v: v + 1, scale=2) == 8
