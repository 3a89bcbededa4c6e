"""Scaled-dot-product attention: grouped-query heads, head sizes, KV-cache queries, bad shapes.

Oracles: central differences in float64 (``gradcheck``), PyTorch's
``scaled_dot_product_attention(..., enable_gqa=True)`` in value and gradient, and the plain
composed form ``ops.reference.scaled_dot_product_attention`` (its gradient is the chain rule's).
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import lora_np
from lora_np import Tensor, gradcheck, ops, to_numpy
from lora_np.ops import reference
from helpers import assert_close, leaf, torch_leaf


KERNELS = {  # (flash_min_t, QUERY_CHUNK of the plain kernels, QUERY_BLOCK, KEY_BLOCK of the flash ones)
    "plain": (10 ** 9, 64, 128, 256),
    "plain-query-chunks-of-2": (10 ** 9, 2, 128, 256),
    "flash-one-block": (0, 64, 128, 256),
    "flash-blocks-2x3": (0, 64, 2, 3),
}


@pytest.fixture(params=list(KERNELS))
def kernels(request, monkeypatch):
    """Every test runs on the plain kernels (which keep P) and on the memory-efficient ones; blocks
    of 2 query rows and 3 keys exercise the causal key skipping and the online softmax's rescaling
    on test-sized shapes. The value is the ``flash_min_t`` argument that picks the kernels."""
    import lora_np.ops.attention as attention
    import lora_np.ops.flash_attention as flash
    flash_min_t, query_chunk, query_block, key_block = KERNELS[request.param]
    monkeypatch.setattr(attention, "QUERY_CHUNK", query_chunk)
    monkeypatch.setattr(flash, "QUERY_BLOCK", query_block)
    monkeypatch.setattr(flash, "KEY_BLOCK", key_block)
    return flash_min_t


def _torch_sdpa(q, k, v, causal):
    """PyTorch's answer and the torch leaves: a causal mask for T_q < T_k aligned to the last keys."""
    tq, tk, tv = torch_leaf(q), torch_leaf(k), torch_leaf(v)
    t_q, t_k = q.shape[-2], k.shape[-2]
    mask = torch.ones(t_q, t_k, dtype=torch.bool).tril(diagonal=t_k - t_q) if causal else None
    return F.scaled_dot_product_attention(tq, tk, tv, attn_mask=mask, enable_gqa=True), (tq, tk, tv)


@pytest.mark.parametrize("heads, kv_heads, t_q, t_k, d, causal", [
    (4, 2, 5, 5, 3, True),      # GQA, groups of 2
    (6, 1, 4, 4, 5, True),      # multi-query attention
    (4, 4, 3, 7, 2, True),      # plain multi-head, queries are the last 3 of 7 positions
    (6, 2, 2, 6, 4, True),      # GQA with a KV cache
    (4, 2, 3, 5, 3, False),     # GQA, no mask
])
def test_sdpa_grouped_query_gradcheck_and_torch(heads, kv_heads, t_q, t_k, d, causal, rng, kernels):
    q, k, v = leaf(rng, 2, heads, t_q, d), leaf(rng, 2, kv_heads, t_k, d), leaf(rng, 2, kv_heads, t_k, d + 1)
    assert gradcheck(lambda *t: ops.scaled_dot_product_attention(*t, causal=causal, flash_min_t=kernels), [q, k, v])
    g = rng.standard_normal((2, heads, t_q, d + 1))
    y = ops.scaled_dot_product_attention(q, k, v, causal=causal, flash_min_t=kernels)
    (y * Tensor(g)).sum().backward()
    y_ref, torch_leaves = _torch_sdpa(q, k, v, causal)
    (y_ref * torch.tensor(g)).sum().backward()
    assert_close(y, y_ref)
    for ours, theirs in zip((q, k, v), torch_leaves):
        assert ours.grad.shape == tuple(theirs.shape)
        assert_close(ours.grad, theirs.grad, rtol=1e-9)


@pytest.mark.parametrize("dropout_p", [0.0, 0.25])
def test_sdpa_grouped_query_equals_reference(dropout_p, rng, kernels):
    """Same value and gradient as the composed form; with dropout both draw the same mask
    (the same count of numbers, (B, H, T_q, T_k), from one reseeded generator)."""
    q, k, v = leaf(rng, 2, 6, 5, 4), leaf(rng, 2, 2, 5, 4), leaf(rng, 2, 2, 5, 4)
    g = Tensor(rng.standard_normal((2, 6, 5, 4)))
    results = []
    for fn in (ops.scaled_dot_product_attention, reference.scaled_dot_product_attention):
        for t in (q, k, v):
            t.zero_grad()
        lora_np.manual_seed(3)
        y = fn(q, k, v, dropout_p=dropout_p, flash_min_t=kernels)
        (y * g).sum().backward()
        results.append([to_numpy(y)] + [to_numpy(t.grad) for t in (q, k, v)])
    for ours, plain in zip(*results):
        assert_close(ours, plain, rtol=1e-10)


def test_sdpa_does_not_repeat_keys_and_values(rng):
    """The K/V heads are read through broadcasting views: the (B, H, T, d) repeat never exists."""
    q, k, v = leaf(rng, 1, 8, 4, 3), leaf(rng, 1, 2, 4, 3), leaf(rng, 1, 2, 4, 3)
    from lora_np.ops.attention import grouped_views
    q5, k5, v5 = grouped_views(q.data, k.data, v.data)
    assert q5.shape == (1, 2, 4, 4, 3) and k5.shape == v5.shape == (1, 2, 1, 4, 3)
    assert np.shares_memory(k5, k.data) and np.shares_memory(v5, v.data) and np.shares_memory(q5, q.data)


def test_plain_kernels_keep_no_output_for_the_backward(rng):
    """The plain kernels' backward reads q, k, v and P, never Y: once the op's output has been used
    (Llama copies it into the merged (B, T, H·d) layout for o_proj), its memory is freed."""
    import gc
    import weakref
    q, k, v = (Tensor(rng.standard_normal((1, 2, 8, 4)), requires_grad=True) for _ in range(3))
    y = ops.scaled_dot_product_attention(q, k, v, flash_min_t=float("inf"))
    probe = weakref.ref(y.data if y.data.base is None else y.data.base)
    merged = y.swapaxes(1, 2).reshape(1, 8, 8)
    del y
    gc.collect()
    assert probe() is None
    merged.sum().backward()
    assert q.grad is not None


@pytest.mark.parametrize("shapes, message", [
    (((1, 4, 3, 2), (1, 3, 3, 2), (1, 3, 3, 2)), "H a multiple of Hkv"),
    (((1, 4, 3, 2), (1, 2, 3, 5), (1, 2, 3, 5)), "do not fit"),
    (((1, 4, 3, 2), (1, 2, 3, 2), (1, 2, 4, 2)), "do not fit"),
    (((2, 4, 3, 2), (1, 2, 3, 2), (1, 2, 3, 2)), "do not fit"),
    (((1, 2, 5, 2), (1, 2, 3, 2), (1, 2, 3, 2)), "T_q ≤ T_k"),
])
def test_sdpa_refuses_shapes_that_do_not_fit(shapes, message, rng):
    q, k, v = (leaf(rng, *s) for s in shapes)
    with pytest.raises(ValueError, match=message):
        ops.scaled_dot_product_attention(q, k, v)


def test_reference_has_the_fused_signature():
    import inspect
    assert (inspect.signature(reference.scaled_dot_product_attention)
            == inspect.signature(ops.scaled_dot_product_attention))
    assert "ops.reference.scaled_dot_product_attention" in ops.scaled_dot_product_attention.__doc__


# --- the memory-efficient kernels ------------------------------------------------------------------
@pytest.mark.parametrize("heads, kv_heads, t_q, t_k", [(3, 3, 300, 300), (4, 2, 130, 390)])
def test_flash_kernels_equal_the_plain_ones_at_real_block_sizes(heads, kv_heads, t_q, t_k, rng):
    """Several 128-row query blocks and 256-key blocks, diagonal blocks partly masked: Y and every
    gradient equal the plain kernels' (which hold P) to float64 rounding."""
    q, k, v = leaf(rng, 2, heads, t_q, 8), leaf(rng, 2, kv_heads, t_k, 8), leaf(rng, 2, kv_heads, t_k, 8)
    q.data *= 3.0  # peaked rows: the running maximum changes from block to block
    g = Tensor(rng.standard_normal((2, heads, t_q, 8)))
    results = []
    for flash_min_t in (0, 10 ** 9):
        for t in (q, k, v):
            t.zero_grad()
        y = ops.scaled_dot_product_attention(q, k, v, flash_min_t=flash_min_t)
        (y * g).sum().backward()
        results.append([to_numpy(y)] + [to_numpy(t.grad) for t in (q, k, v)])
    for flash, plain in zip(*results):
        assert_close(flash, plain, rtol=1e-10, atol=1e-12)


def test_flash_causal_self_attention_gradcheck(rng, monkeypatch):
    import lora_np.ops.flash_attention as flash
    monkeypatch.setattr(flash, "QUERY_BLOCK", 2)
    monkeypatch.setattr(flash, "KEY_BLOCK", 2)
    qkv = leaf(rng, 2, 5, 3 * 6)
    assert gradcheck(lambda x: ops.causal_self_attention(x, 2, flash_min_t=0), [qkv])
    with lora_np.no_grad():
        ours = to_numpy(ops.causal_self_attention(qkv, 2, flash_min_t=0))
        plain = to_numpy(reference.causal_self_attention(qkv, 2))
    assert_close(ours, plain)


def test_flash_attention_peak_memory_is_a_fraction_of_one_probability_tensor():
    """tracemalloc (NumPy reports its buffers to it): forward + backward at T 1,024, 4 heads of 16,
    float32, allocate at most 0.35× one (H, T, T) float32 tensor beyond the inputs; the plain
    kernels allocate more than one."""
    import tracemalloc
    if lora_np.backend.get_backend() != "numpy":
        pytest.skip("tracemalloc sees host allocations only")
    h, t, d = 4, 1024, 16
    rng = np.random.default_rng(0)
    q, k, v = (Tensor(rng.standard_normal((1, h, t, d), dtype=np.float32), requires_grad=True) for _ in range(3))
    peaks = {}
    for name, flash_min_t in (("flash", 0), ("plain", 10 ** 9)):
        try:
            tracemalloc.start()
            ops.scaled_dot_product_attention(q, k, v, flash_min_t=flash_min_t).sum().backward()
            peaks[name] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    one_probability_tensor = h * t * t * 4
    assert peaks["flash"] <= 0.35 * one_probability_tensor, peaks
    assert peaks["plain"] > one_probability_tensor, peaks


def test_flash_kernels_stay_on_the_device(backend_name, rng, monkeypatch):
    """With the stand-in device module as ``xp`` (tests/device_standin.py), the memory-efficient
    kernels (causal masks, grouped heads, the group sum) compute with device arrays only: CuPy-ready."""
    if backend_name != "numpy":
        pytest.skip("the stand-in device replaces the numpy backend")
    import lora_np.ops.flash_attention as flash
    from device_standin import DeviceArray, standin
    monkeypatch.setattr(flash, "QUERY_BLOCK", 2)
    monkeypatch.setattr(flash, "KEY_BLOCK", 3)
    with lora_np.backend.using(standin, "standin"):
        q, k, v = (Tensor(standin.asarray(rng.standard_normal(s)), requires_grad=True)
                   for s in ((2, 4, 5, 3), (2, 2, 7, 3), (2, 2, 7, 3)))
        y = ops.scaled_dot_product_attention(q, k, v, flash_min_t=0)
        y.backward(standin.ones(y.shape))
        yw = ops.scaled_dot_product_attention(q, k, v, window=2, flash_min_t=0)   # windowed blocks too
        yw.backward(standin.ones(yw.shape))
        qkv = Tensor(standin.asarray(rng.standard_normal((2, 5, 12))), requires_grad=True)
        ops.causal_self_attention(qkv, 2, flash_min_t=0).sum().backward()
        for a in (y.data, yw.data, q.grad, k.grad, v.grad, qkv.grad):
            assert isinstance(a, DeviceArray)


def _flash_calls(monkeypatch):
    """A list that gets one entry per call of the memory-efficient forward kernel."""
    import lora_np.ops.flash_attention as flash
    calls, real = [], flash.flash_forward_kernel
    monkeypatch.setattr(flash, "flash_forward_kernel", lambda *a: calls.append(1) or real(*a))
    return calls


def test_flash_min_t_argument_picks_the_kernels(rng, monkeypatch):
    """``flash_min_t`` is an argument of every attention op: 0 takes the memory-efficient kernels at
    any length, math.inf never; the module's FLASH_MIN_T is the default and is never rebound."""
    import math
    import lora_np.ops.attention as attention
    calls = _flash_calls(monkeypatch)
    qkv, q = leaf(rng, 1, 4, 3 * 4), leaf(rng, 1, 2, 4, 2)
    default = attention.FLASH_MIN_T
    for flash_min_t, expect_flash in ((0, True), (math.inf, False), (None, False), (4, True), (5, False)):
        for op, args in ((ops.causal_self_attention, (qkv, 2)), (ops.scaled_dot_product_attention, (q, q, q))):
            calls.clear()
            op(*args, flash_min_t=flash_min_t)
            assert bool(calls) == expect_flash, flash_min_t
    assert attention.FLASH_MIN_T == default == 1024


@pytest.mark.parametrize("bad", [-1, "0", True, float("nan")])
def test_flash_min_t_refuses_what_is_not_a_row_count(bad, rng):
    q = leaf(rng, 1, 2, 4, 2)
    with pytest.raises(ValueError, match="flash_min_t must be None or a number of query rows"):
        ops.scaled_dot_product_attention(q, q, q, flash_min_t=bad)


def test_memory_efficient_attention_switch(rng, monkeypatch):
    """For code that cannot pass ``flash_min_t`` (a model): the context picks the kernels at any
    length, an explicit argument still wins, and nothing is left changed after the block."""
    import lora_np.ops.attention as attention
    calls = _flash_calls(monkeypatch)
    qkv = leaf(rng, 1, 4, 3 * 4)
    for enabled in (True, False):
        with attention.memory_efficient_attention(enabled):
            calls.clear()
            ops.causal_self_attention(qkv, 2)
            assert bool(calls) == enabled
            calls.clear()
            ops.causal_self_attention(qkv, 2, flash_min_t=10 ** 9 if enabled else 0)
            assert bool(calls) != enabled
    calls.clear()
    ops.causal_self_attention(qkv, 2)
    assert not calls and attention.resolve_flash_min_t(None) == attention.FLASH_MIN_T


# --- sliding-window attention (Gemma 3's local layers) ---------------------------------------------
def _transformers_window_mask(t_q, t_k, window):
    """transformers' own rule (masking_utils.sliding_window_causal_mask_function) at absolute
    positions: the T_q queries are the last T_q of the T_k key positions, as under its KV cache."""
    from transformers.masking_utils import causal_mask_function, sliding_window_causal_mask_function
    rule = causal_mask_function if window is None else sliding_window_causal_mask_function(window)
    zero = torch.tensor(0)
    mask = rule(zero, zero, torch.arange(t_k - t_q, t_k)[:, None], torch.arange(t_k)[None, :])
    return mask.expand(t_q, t_k)


def _torch_window_sdpa(q, k, v, window):
    """The plain masked oracle: PyTorch's sdpa with transformers' sliding-window mask."""
    tq, tk, tv = torch_leaf(q), torch_leaf(k), torch_leaf(v)
    mask = _transformers_window_mask(q.shape[-2], k.shape[-2], window)
    return F.scaled_dot_product_attention(tq, tk, tv, attn_mask=mask, enable_gqa=True), (tq, tk, tv)


@pytest.mark.parametrize("window", [1, 3, 6, 7, 12])     # 1, 3, T - 1, T, ≥ T with T = 7
@pytest.mark.parametrize("heads, kv_heads, t_q", [(2, 2, 7), (4, 2, 7), (4, 1, 3)])
def test_window_gradcheck_and_transformers_mask(window, heads, kv_heads, t_q, rng, kernels):
    """Central differences in float64, then value and gradient against PyTorch's sdpa under the
    mask transformers builds for Gemma 3's sliding layers; t_q < T_k: the last queries of a KV cache."""
    t_k = 7
    q, k, v = leaf(rng, 2, heads, t_q, 3), leaf(rng, 2, kv_heads, t_k, 3), leaf(rng, 2, kv_heads, t_k, 2)
    assert gradcheck(lambda *t: ops.scaled_dot_product_attention(*t, window=window, flash_min_t=kernels), [q, k, v])
    g = rng.standard_normal((2, heads, t_q, 2))
    y = ops.scaled_dot_product_attention(q, k, v, window=window, flash_min_t=kernels)
    (y * Tensor(g)).sum().backward()
    y_ref, torch_leaves = _torch_window_sdpa(q, k, v, window)
    (y_ref * torch.tensor(g)).sum().backward()
    assert_close(y, y_ref, rtol=1e-12)
    for ours, theirs in zip((q, k, v), torch_leaves):
        assert_close(ours.grad, theirs.grad, rtol=1e-9)


@pytest.mark.parametrize("window", [1, 2, 5])
def test_window_equals_the_composed_reference(window, rng, kernels):
    """The fused ops (sdpa and GPT-2's packed causal_self_attention) equal ``ops.reference``'s few
    composed ops, value and gradient, with dropout on the plain kernels as well."""
    qkv, g = leaf(rng, 2, 9, 3 * 8), Tensor(rng.standard_normal((2, 9, 8)))
    for dropout_p in (0.0, 0.3):
        results = []
        for fn in (ops.causal_self_attention, reference.causal_self_attention):
            qkv.zero_grad()
            lora_np.manual_seed(5)
            y = fn(qkv, 2, dropout_p, True, window=window, flash_min_t=kernels)
            (y * g).sum().backward()
            results.append((to_numpy(y), to_numpy(qkv.grad)))
        for ours, plain in zip(*results):
            assert_close(ours, plain, rtol=1e-10)


def test_reference_window_is_transformers_mask(rng):
    """The composed reference itself against PyTorch under transformers' mask (its oracle)."""
    q, k, v = leaf(rng, 1, 2, 4, 3), leaf(rng, 1, 2, 9, 3), leaf(rng, 1, 2, 9, 3)
    assert_close(reference.scaled_dot_product_attention(q, k, v, window=3), _torch_window_sdpa(q, k, v, 3)[0])


@pytest.mark.parametrize("t_q", [1, 3])
def test_window_over_a_key_buffer_that_holds_only_the_window(t_q, rng, kernels):
    """A KV cache may keep only the last keys: the queries at the end of a 20-position sequence,
    window 5, attend alike to all 20 keys or to the last 5 + T_q - 1 of them (no offset argument)."""
    window, t_k = 5, 20
    q, k, v = leaf(rng, 1, 2, t_q, 4), leaf(rng, 1, 2, t_k, 4), leaf(rng, 1, 2, t_k, 4)
    kept = window + t_q - 1
    whole = ops.scaled_dot_product_attention(q, k, v, window=window, flash_min_t=kernels)
    trimmed = ops.scaled_dot_product_attention(q, k[:, :, -kept:], v[:, :, -kept:], window=window,
                                               flash_min_t=kernels)
    np.testing.assert_allclose(to_numpy(trimmed), to_numpy(whole), rtol=1e-13, atol=1e-15)


def test_flash_window_visits_only_the_blocks_in_the_window(rng, monkeypatch):
    """Every key block the memory-efficient kernels compute holds a key its query rows see: T 64 in
    blocks of 4, window 5: 16 query blocks × at most 3 key blocks, not the 136 causal blocks."""
    import lora_np.ops.flash_attention as flash
    monkeypatch.setattr(flash, "QUERY_BLOCK", 4)
    monkeypatch.setattr(flash, "KEY_BLOCK", 4)
    visited, real = [], flash.masked_scores

    def recording(q_i, k_j, mask, a, c, out=None):
        visited.append((a, a + q_i.shape[-2], c, c + k_j.shape[-2]))
        return real(q_i, k_j, mask, a, c, out)

    monkeypatch.setattr(flash, "masked_scores", recording)
    q, k, v = leaf(rng, 1, 1, 64, 2), leaf(rng, 1, 1, 64, 2), leaf(rng, 1, 1, 64, 2)
    ops.scaled_dot_product_attention(q, k, v, window=5, flash_min_t=0).sum().backward()
    assert visited and all(c <= b - 1 and f - 1 > a - 5 for a, b, c, f in visited)
    assert len(visited) <= 2 * 16 * 3   # forward and backward


@pytest.mark.parametrize("window, causal, message", [
    (0, True, "positive int"), (-2, True, "positive int"), (2.5, True, "positive int"), (True, True, "positive int"),
    (3, False, "needs causal=True"),
])
def test_window_refuses_bad_values(window, causal, message, rng):
    q = leaf(rng, 1, 2, 4, 2)
    with pytest.raises(ValueError, match=message):
        ops.scaled_dot_product_attention(q, q, q, causal=causal, window=window)


# --- nothing kept across calls ---------------------------------------------------------------------
@pytest.mark.parametrize("window", [None, 4])
def test_no_memory_kept_across_a_growing_generation(window, rng):
    """300 generation-like calls, the key length growing by one each time (1 to 3 new queries):
    the NumPy memory still held afterwards (tracemalloc) stays flat: no mask or buffer is cached
    per length. (A per-length mask cache held about 0.5 MB here.)"""
    import gc
    import tracemalloc
    if lora_np.backend.get_backend() != "numpy":
        pytest.skip("tracemalloc sees host allocations only")
    q_all, kv = rng.standard_normal((1, 2, 3, 4)), rng.standard_normal((1, 2, 320, 4))
    with lora_np.no_grad():
        def step(i):
            q = Tensor(q_all[:, :, : 1 + i % 3])
            ops.scaled_dot_product_attention(q, Tensor(kv[:, :, : 8 + i]), Tensor(kv[:, :, : 8 + i]), window=window)
        step(0)
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for i in range(300):
                step(i)
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
    assert held < 16 * 1024, held


def _held_after_generating(model, n):
    """Bytes of traced memory still held once ``model.generate`` of n tokens returns (beyond its ids)."""
    import gc
    import tracemalloc
    idx = np.zeros((1, 4), dtype=np.int64)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        out = model.generate(idx, n)
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before - out.nbytes
    finally:
        tracemalloc.stop()


def test_gpt_generation_memory_is_flat_in_its_length():
    """KV-cache generation through the public API: what stays held after 300 tokens is what stays
    after 30 (tracemalloc; up to some 30 KB of thread-pool bookkeeping either way), not one mask per
    length (a per-length mask cache held about 300 KB more after the longer one)."""
    if lora_np.backend.get_backend() != "numpy":
        pytest.skip("tracemalloc sees host allocations only")
    model = lora_np.GPT(lora_np.GPTConfig(vocab_size=11, block_size=320, n_layer=1, n_head=2, n_embd=8)).eval()
    _held_after_generating(model, 2)
    short, long = _held_after_generating(model, 30), _held_after_generating(model, 300)
    assert long < short + 64 * 1024, (short, long)
