"""Fused ops (softmax, log_softmax, cross_entropy, layer_norm, GELU, embedding, dropout, attention,
linear): float64 gradchecks, then forward values and gradients against PyTorch as the oracle,
and numerical stability with huge logits."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import lora_np
from lora_np import Tensor, gradcheck, ops, to_numpy
from helpers import assert_close, leaf, torch_leaf


# --- softmax / log_softmax ---------------------------------------------------------------------
@pytest.mark.parametrize("axis", [-1, 0, 1])
@pytest.mark.parametrize("op,torch_op", [(ops.softmax, torch.softmax), (ops.log_softmax, torch.log_softmax)])
def test_softmax_family_against_torch(op, torch_op, axis, rng):
    x = leaf(rng, 2, 3, 5)
    assert gradcheck(lambda t: op(t, axis=axis), [x])
    w = rng.standard_normal((2, 3, 5))
    (op(x, axis=axis) * w).sum().backward()
    tx = torch_leaf(x)
    (torch_op(tx, dim=axis) * torch.tensor(w)).sum().backward()
    assert_close(op(x, axis=axis), torch_op(tx, dim=axis))
    assert_close(x.grad, tx.grad)


def test_softmax_family_is_stable_for_huge_logits():
    x = Tensor(np.array([[1e4, 0.0, -1e4], [3e4, 3e4, 3e4]], dtype=np.float32), requires_grad=True)
    for y in (ops.softmax(x), ops.log_softmax(x)):
        assert np.isfinite(to_numpy(y)).all()
    np.testing.assert_allclose(to_numpy(ops.softmax(x))[1], [1 / 3] * 3, rtol=1e-6)


# --- cross_entropy -------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(6, 7), (2, 3, 7)])
def test_cross_entropy_gradcheck_and_torch(shape, rng):
    logits = leaf(rng, *shape)
    targets = rng.integers(0, shape[-1], size=shape[:-1])
    targets.reshape(-1)[1] = -1  # one ignored position
    assert gradcheck(lambda z: ops.cross_entropy(z, targets), [logits])
    loss = ops.cross_entropy(logits, targets)
    loss.backward()
    tz = torch_leaf(logits)
    tloss = F.cross_entropy(tz.reshape(-1, shape[-1]), torch.tensor(targets.reshape(-1)), ignore_index=-1)
    tloss.backward()
    assert_close(loss, tloss)
    assert_close(logits.grad, tz.grad)


def test_cross_entropy_is_stable_for_huge_logits():
    logits = Tensor(np.array([[1e4, 0.0, -1e4], [0.0, 0.0, 1e4]], dtype=np.float32), requires_grad=True)
    loss = ops.cross_entropy(logits, np.array([2, 0]))
    loss.backward()
    np.testing.assert_allclose(loss.item(), (2e4 + 1e4) / 2, rtol=1e-6)
    assert np.isfinite(to_numpy(logits.grad)).all()


def test_cross_entropy_bad_targets(rng):
    logits = leaf(rng, 4, 5)
    with pytest.raises(ValueError, match=r"target.*7.*\[0, 5\)"):
        ops.cross_entropy(logits, np.array([0, 1, 7, 2]))
    with pytest.raises(TypeError, match="integers"):
        ops.cross_entropy(logits, np.array([0.0, 1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="4 rows"):
        ops.cross_entropy(logits, np.array([0, 1]))
    with pytest.raises(ValueError, match="ignore_index"):
        ops.cross_entropy(logits, np.array([-1, -1, -1, -1]))


# --- layer_norm ------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(4, 6), (2, 3, 8)])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_gradcheck_and_torch(shape, affine, rng):
    x = leaf(rng, *shape)
    w, b = (leaf(rng, shape[-1]), leaf(rng, shape[-1])) if affine else (None, None)
    inputs = [x, w, b] if affine else [x]
    assert gradcheck(lambda *t: ops.layer_norm(t[0], *t[1:]), inputs)
    g = rng.standard_normal(shape)
    (ops.layer_norm(x, w, b) * g).sum().backward()
    tx, tw, tb = torch_leaf(x), (torch_leaf(w) if affine else None), (torch_leaf(b) if affine else None)
    y_ref = F.layer_norm(tx, (shape[-1],), tw, tb, eps=1e-5)
    (y_ref * torch.tensor(g)).sum().backward()
    assert_close(ops.layer_norm(x, w, b), y_ref)
    assert_close(x.grad, tx.grad, rtol=1e-9)
    if affine:
        assert_close(w.grad, tw.grad)
        assert_close(b.grad, tb.grad)


def test_layer_norm_frozen_affine_gets_no_grad(rng):
    x = leaf(rng, 3, 4)
    w = Tensor(np.ones(4))
    ops.layer_norm(x, w, Tensor(np.zeros(4))).sum().backward()
    assert w.grad is None and x.grad is not None


# --- gelu ------------------------------------------------------------------------------------------
def test_gelu_gradcheck_and_torch(rng):
    x = leaf(rng, 3, 7)
    x.data *= 3  # cover the tails
    assert gradcheck(ops.gelu, [x])
    ops.gelu(x).sum().backward()
    tx = torch_leaf(x)
    F.gelu(tx, approximate="tanh").sum().backward()
    assert_close(ops.gelu(x), F.gelu(tx, approximate="tanh"))
    assert_close(x.grad, tx.grad)


def test_gelu_is_finite_for_huge_inputs():
    x = Tensor(np.array([-1e4, -50.0, 0.0, 50.0, 1e4], dtype=np.float32), requires_grad=True)
    y = ops.gelu(x)
    y.sum().backward()
    np.testing.assert_allclose(to_numpy(y), [0, 0, 0, 50, 1e4], atol=1e-5)
    assert np.isfinite(to_numpy(x.grad)).all()


# --- embedding -------------------------------------------------------------------------------------
def test_embedding_gradcheck_and_torch(rng):
    table = leaf(rng, 7, 4)
    idx = np.array([[1, 1, 3], [6, 1, 0]])  # token 1 occurs three times
    assert gradcheck(lambda w: ops.embedding(idx, w), [table])
    g = rng.standard_normal((2, 3, 4))
    (ops.embedding(idx, table) * g).sum().backward()
    tw = torch_leaf(table)
    (F.embedding(torch.tensor(idx), tw) * torch.tensor(g)).sum().backward()
    assert_close(table.grad, tw.grad)


def test_embedding_add_rows_sums_duplicates(rng):
    from lora_np.ops.embedding import add_rows
    rows = rng.integers(0, 6, size=40)
    values = rng.standard_normal((40, 3))
    expected = np.zeros((6, 3))
    for r, v in zip(rows, values):  # the definition, one row at a time
        expected[r] += v
    target = lora_np.backend.xp.zeros((6, 3))
    add_rows(target, lora_np.backend.asarray(rows), lora_np.backend.asarray(values))
    np.testing.assert_allclose(to_numpy(target), expected, rtol=1e-12)


def test_embedding_rejects_out_of_range_and_float_ids(rng):
    table = leaf(rng, 5, 2)
    with pytest.raises(ValueError, match=r"5 is outside \[0, 5\)"):
        ops.embedding(np.array([0, 5]), table)
    with pytest.raises(ValueError, match=r"-1 is outside"):
        ops.embedding(np.array([-1]), table)
    with pytest.raises(TypeError, match="integers"):
        ops.embedding(np.array([0.5]), table)


# --- dropout ---------------------------------------------------------------------------------------
def test_dropout_gradcheck_with_a_fixed_mask(rng):
    x = leaf(rng, 4, 5)

    def f(t):
        lora_np.manual_seed(7)  # the same mask on every evaluation
        return ops.dropout(t, 0.3)

    assert gradcheck(f, [x])


def test_dropout_statistics_and_eval_identity(rng):
    x = Tensor(np.ones((200, 500), dtype=np.float32))
    y = to_numpy(ops.dropout(x, 0.25))
    assert abs((y == 0).mean() - 0.25) < 0.01
    np.testing.assert_allclose(y[y != 0], 1 / 0.75, rtol=1e-6)
    assert ops.dropout(x, 0.25, training=False) is x
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        ops.dropout(x, 1.0)


# --- attention -------------------------------------------------------------------------------------
@pytest.fixture(params=[64, 2], ids=["one-query-chunk", "query-chunks-of-2"])
def query_chunk(request, monkeypatch):
    """Causal attention skips fully masked key blocks in chunks of query rows; a chunk of 2
    exercises that path on small test shapes."""
    import lora_np.ops.attention as attention
    monkeypatch.setattr(attention, "QUERY_CHUNK", request.param)
    return request.param


def test_sdpa_gradcheck_and_torch(rng, query_chunk):
    q, k, v = leaf(rng, 2, 3, 5, 4), leaf(rng, 2, 3, 5, 4), leaf(rng, 2, 3, 5, 4)
    assert gradcheck(ops.scaled_dot_product_attention, [q, k, v])
    g = rng.standard_normal((2, 3, 5, 4))
    (ops.scaled_dot_product_attention(q, k, v) * g).sum().backward()
    tq, tk, tv = torch_leaf(q), torch_leaf(k), torch_leaf(v)
    y_ref = F.scaled_dot_product_attention(tq, tk, tv, is_causal=True)
    (y_ref * torch.tensor(g)).sum().backward()
    assert_close(ops.scaled_dot_product_attention(q, k, v), y_ref)
    for ours, theirs in ((q, tq), (k, tk), (v, tv)):
        assert_close(ours.grad, theirs.grad, rtol=1e-9)


def test_sdpa_with_fewer_queries_than_keys_sees_the_last_positions(rng, query_chunk):
    """The KV-cache case: 2 queries at positions 3, 4 of 5 keys equal the last 2 rows of full attention."""
    q, k, v = leaf(rng, 1, 2, 5, 4), leaf(rng, 1, 2, 5, 4), leaf(rng, 1, 2, 5, 4)
    full = ops.scaled_dot_product_attention(q, k, v)
    tail = ops.scaled_dot_product_attention(q[:, :, 3:], k, v)
    np.testing.assert_allclose(to_numpy(tail), to_numpy(full)[:, :, 3:], rtol=1e-12)


def test_sdpa_non_causal_and_dropout_gradcheck(rng, query_chunk):
    q, k, v = leaf(rng, 2, 3, 4), leaf(rng, 2, 5, 4), leaf(rng, 2, 5, 3)
    assert gradcheck(lambda *t: ops.scaled_dot_product_attention(*t, causal=False), [q, k, v])

    def with_dropout(*t):
        lora_np.manual_seed(11)
        return ops.scaled_dot_product_attention(*t, dropout_p=0.2)

    q2 = leaf(rng, 2, 5, 4)
    assert gradcheck(with_dropout, [q2, k, v])
    assert gradcheck(lambda *t: ops.scaled_dot_product_attention(*t, causal=True), [leaf(rng, 2, 3, 4), k, v])


def test_causal_self_attention_matches_composed_ops(rng, query_chunk):
    """The fused (B, T, 3C) op equals split -> heads -> sdpa -> merge built from generic ops."""
    b, t, c, h = 2, 5, 8, 2
    qkv = leaf(rng, b, t, 3 * c)
    assert gradcheck(lambda x: ops.causal_self_attention(x, h), [qkv])

    def composed(x):
        q, k, v = ops.split(x, 3, axis=2)
        heads = [z.reshape(b, t, h, c // h).permute(0, 2, 1, 3) for z in (q, k, v)]
        return ops.scaled_dot_product_attention(*heads).permute(0, 2, 1, 3).reshape(b, t, c)

    np.testing.assert_allclose(to_numpy(ops.causal_self_attention(qkv, h)), to_numpy(composed(qkv)), rtol=1e-12)
    g = rng.standard_normal((b, t, c))
    (ops.causal_self_attention(qkv, h) * g).sum().backward()
    fused_grad = to_numpy(qkv.grad)
    qkv.grad = None
    (composed(qkv) * g).sum().backward()
    np.testing.assert_allclose(fused_grad, to_numpy(qkv.grad), rtol=1e-10)


def test_attention_is_stable_for_huge_scores():
    q = Tensor(np.full((1, 1, 3, 2), 1e3, dtype=np.float32), requires_grad=True)
    k = Tensor(np.array([[[[1e3, 1e3], [-1e3, -1e3], [1e3, 0]]]], dtype=np.float32), requires_grad=True)
    v = Tensor(np.ones((1, 1, 3, 2), dtype=np.float32), requires_grad=True)
    y = ops.scaled_dot_product_attention(q, k, v)
    y.sum().backward()
    assert np.isfinite(to_numpy(y)).all() and np.isfinite(to_numpy(q.grad)).all()


# --- linear ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("x_shape", [(4, 3), (2, 5, 3)])
def test_linear_gradcheck_and_torch(x_shape, rng):
    x, w, b = leaf(rng, *x_shape), leaf(rng, 3, 6), leaf(rng, 6)
    assert gradcheck(ops.linear, [x, w, b])
    assert gradcheck(lambda x, w: ops.linear(x, w), [x, w])
    g = rng.standard_normal(x_shape[:-1] + (6,))
    (ops.linear(x, w, b) * g).sum().backward()
    tx, tw, tb = torch_leaf(x), torch_leaf(w), torch_leaf(b)
    ((tx @ tw + tb) * torch.tensor(g)).sum().backward()
    for ours, theirs in ((x, tx), (w, tw), (b, tb)):
        assert_close(ours.grad, theirs.grad)


def test_linear_with_frozen_weight_computes_no_weight_grad(rng):
    x, w = leaf(rng, 4, 3), Tensor(rng.standard_normal((3, 2)))
    ops.linear(x, w).sum().backward()
    assert w.grad is None and x.grad is not None


def test_linear_shape_errors(rng):
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(5, 2\)"):
        ops.linear(leaf(rng, 4, 3), leaf(rng, 5, 2))
    with pytest.raises(ValueError, match="bias"):
        ops.linear(leaf(rng, 4, 3), leaf(rng, 3, 2), leaf(rng, 3))


@pytest.mark.parametrize("op", ["linear", "layer_norm", "rms_norm", "lora_linear"])
def test_input_gradient_is_an_array_of_its_own_in_the_inputs_shape(op, rng):
    """A residual stream's gradient is summed from two branches: the walk adds in place into a
    gradient that owns its memory, and would copy a reshaped view (autograd._GradientSums)."""
    x = leaf(rng, 2, 5, 4)
    args = {"linear": (leaf(rng, 4, 3), leaf(rng, 3)), "layer_norm": (leaf(rng, 4), leaf(rng, 4)),
            "rms_norm": (leaf(rng, 4),), "lora_linear": (leaf(rng, 4, 3), leaf(rng, 3), leaf(rng, 2, 4),
                                                        leaf(rng, 3, 2), 0.5)}[op]
    y = getattr(ops, op)(x, *args)
    dx = y._node.backward(lora_np.backend.xp.ones(y.shape, dtype=y.dtype))[0]
    assert dx.shape == x.shape and dx.flags.owndata
