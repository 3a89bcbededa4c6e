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


@pytest.fixture(params=[64, 2], ids=["one-query-chunk", "query-chunks-of-2"])
def query_chunk(request, monkeypatch):
    """Small chunks of query rows exercise the causal key skipping on test-sized shapes."""
    import lora_np.ops.attention as attention
    monkeypatch.setattr(attention, "QUERY_CHUNK", request.param)
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
def test_sdpa_grouped_query_gradcheck_and_torch(heads, kv_heads, t_q, t_k, d, causal, rng, query_chunk):
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
def test_sdpa_grouped_query_equals_reference(dropout_p, rng, query_chunk):
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
