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


KERNELS = {  # (FLASH_MIN_T, QUERY_CHUNK of the plain kernels, QUERY_BLOCK, KEY_BLOCK of the flash ones)
    "plain": (10 ** 9, 64, 128, 256),
    "plain-query-chunks-of-2": (10 ** 9, 2, 128, 256),
    "flash-one-block": (0, 64, 128, 256),
    "flash-blocks-2x3": (0, 64, 2, 3),
}


@pytest.fixture(params=list(KERNELS))
def kernels(request, monkeypatch):
    """Every test runs on the plain kernels (which keep P) and on the memory-efficient ones; blocks
    of 2 query rows and 3 keys exercise the causal key skipping and the online softmax's rescaling
    on test-sized shapes."""
    import lora_np.ops.attention as attention
    import lora_np.ops.flash_attention as flash
    flash_min_t, query_chunk, query_block, key_block = KERNELS[request.param]
    monkeypatch.setattr(attention, "FLASH_MIN_T", flash_min_t)
    monkeypatch.setattr(attention, "QUERY_CHUNK", query_chunk)
    monkeypatch.setattr(flash, "QUERY_BLOCK", query_block)
    monkeypatch.setattr(flash, "KEY_BLOCK", key_block)
    return request.param


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
    assert gradcheck(lambda *t: ops.scaled_dot_product_attention(*t, causal=causal), [q, k, v])
    g = rng.standard_normal((2, heads, t_q, d + 1))
    y = ops.scaled_dot_product_attention(q, k, v, causal=causal)
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
        y = fn(q, k, v, dropout_p=dropout_p)
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
def test_flash_kernels_equal_the_plain_ones_at_real_block_sizes(heads, kv_heads, t_q, t_k, rng, monkeypatch):
    """Several 128-row query blocks and 256-key blocks, diagonal blocks partly masked: Y and every
    gradient equal the plain kernels' (which hold P) to float64 rounding."""
    import lora_np.ops.attention as attention
    q, k, v = leaf(rng, 2, heads, t_q, 8), leaf(rng, 2, kv_heads, t_k, 8), leaf(rng, 2, kv_heads, t_k, 8)
    q.data *= 3.0  # peaked rows: the running maximum changes from block to block
    g = Tensor(rng.standard_normal((2, heads, t_q, 8)))
    results = []
    for flash_min_t in (0, 10 ** 9):
        monkeypatch.setattr(attention, "FLASH_MIN_T", flash_min_t)
        for t in (q, k, v):
            t.zero_grad()
        y = ops.scaled_dot_product_attention(q, k, v)
        (y * g).sum().backward()
        results.append([to_numpy(y)] + [to_numpy(t.grad) for t in (q, k, v)])
    for flash, plain in zip(*results):
        assert_close(flash, plain, rtol=1e-10, atol=1e-12)


def test_flash_causal_self_attention_gradcheck(rng, monkeypatch):
    import lora_np.ops.attention as attention
    import lora_np.ops.flash_attention as flash
    monkeypatch.setattr(attention, "FLASH_MIN_T", 0)
    monkeypatch.setattr(flash, "QUERY_BLOCK", 2)
    monkeypatch.setattr(flash, "KEY_BLOCK", 2)
    qkv = leaf(rng, 2, 5, 3 * 6)
    assert gradcheck(lambda x: ops.causal_self_attention(x, 2), [qkv])
    with lora_np.no_grad():
        ours = to_numpy(ops.causal_self_attention(qkv, 2))
        plain = to_numpy(reference.causal_self_attention(qkv, 2))
    assert_close(ours, plain)


def test_flash_attention_peak_memory_is_a_fraction_of_one_probability_tensor():
    """tracemalloc (NumPy reports its buffers to it): forward + backward at T 1,024, 4 heads of 16,
    float32, allocate at most 0.35× one (H, T, T) float32 tensor beyond the inputs; the plain
    kernels allocate more than one."""
    import tracemalloc
    import lora_np.ops.attention as attention
    if lora_np.backend.get_backend() != "numpy":
        pytest.skip("tracemalloc sees host allocations only")
    h, t, d = 4, 1024, 16
    rng = np.random.default_rng(0)
    q, k, v = (Tensor(rng.standard_normal((1, h, t, d), dtype=np.float32), requires_grad=True) for _ in range(3))
    peaks = {}
    for name, flash_min_t in (("flash", 0), ("plain", 10 ** 9)):
        attention.FLASH_MIN_T, saved = flash_min_t, attention.FLASH_MIN_T
        try:
            tracemalloc.start()
            ops.scaled_dot_product_attention(q, k, v).sum().backward()
            peaks[name] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            attention.FLASH_MIN_T = saved
    one_probability_tensor = h * t * t * 4
    assert peaks["flash"] <= 0.35 * one_probability_tensor, peaks
    assert peaks["plain"] > one_probability_tensor, peaks


def test_flash_kernels_stay_on_the_device(backend_name, rng, monkeypatch):
    """With the stand-in device module as ``xp`` (tests/device_standin.py), the memory-efficient
    kernels (causal masks, grouped heads, the group sum) compute with device arrays only: CuPy-ready."""
    if backend_name != "numpy":
        pytest.skip("the stand-in device replaces the numpy backend")
    import lora_np.ops.attention as attention
    import lora_np.ops.flash_attention as flash
    from device_standin import DeviceArray, standin
    monkeypatch.setattr(attention, "FLASH_MIN_T", 0)
    monkeypatch.setattr(flash, "QUERY_BLOCK", 2)
    monkeypatch.setattr(flash, "KEY_BLOCK", 3)
    with lora_np.backend.using(standin, "standin"):
        q, k, v = (Tensor(standin.asarray(rng.standard_normal(s)), requires_grad=True)
                   for s in ((2, 4, 5, 3), (2, 2, 7, 3), (2, 2, 7, 3)))
        y = ops.scaled_dot_product_attention(q, k, v)
        y.backward(standin.ones(y.shape))
        qkv = Tensor(standin.asarray(rng.standard_normal((2, 5, 12))), requires_grad=True)
        ops.causal_self_attention(qkv, 2).sum().backward()
        for a in (y.data, q.grad, k.grad, v.grad, qkv.grad):
            assert isinstance(a, DeviceArray)


def test_memory_efficient_attention_switch(rng):
    """The context picks the kernels at any length, and puts the default back."""
    import lora_np.ops.attention as attention
    import lora_np.ops.flash_attention as flash
    calls = []
    real = flash.flash_forward_kernel
    qkv = leaf(rng, 1, 4, 3 * 4)
    default = attention.FLASH_MIN_T
    for enabled in (True, False):
        with attention.memory_efficient_attention(enabled):
            flash.flash_forward_kernel = lambda *a: calls.append(enabled) or real(*a)
            try:
                ops.causal_self_attention(qkv, 2)
            finally:
                flash.flash_forward_kernel = real
        assert attention.FLASH_MIN_T == default
    assert calls and set(calls) == {True}   # one call per block of heads, none with enabled=False
