"""Every fused op equals its plain reference (``lora_np.ops.reference``) in value and gradient.

Oracle: the reference is composed of primitive ops whose backward passes are gradchecked one by
one (test_ops_elementwise, test_ops_matmul_reductions, test_ops_shape_indexing), so its gradient
is the chain rule's; the fused op's backward is hand-derived. float64 throughout. Dropout cases
reseed before each call so both draw the same mask (the same count of numbers from one generator).
Every test runs twice: as the sizes say, and under ``parallel.forced_threads(2)``, which splits the
fused ops into blocks (and every GEMM into row or column blocks) at these small sizes, so that
the threaded paths are compared with the references too.
"""

import pytest

import lora_np
from lora_np import Tensor, ops, parallel
from lora_np.ops import reference
from lora_np.ops.dora_linear import dora_linear
from helpers import assert_close, leaf

FUSED = {"dora_linear": dora_linear}  # fused ops that lora_np.ops does not export


@pytest.fixture(autouse=True, params=["as-sized", "forced-threads"])
def threading_mode(request):
    if request.param == "as-sized":
        yield
    else:
        with parallel.forced_threads(2):
            yield


def _value_and_grads(fn, inputs, weights, seed=7):
    """fn(*inputs), and the gradient of Σ fn(*inputs) ⊙ weights with respect to each input (None: skipped)."""
    args = inputs
    inputs = [t for t in inputs if t is not None]
    for t in inputs:
        t.zero_grad()
    lora_np.manual_seed(seed)
    y = fn(*args)
    (y * Tensor(weights)).sum().backward()
    return y.numpy(), [None if t.grad is None else lora_np.to_numpy(t.grad) for t in inputs]


def assert_same_as_reference(name, inputs, rng, rtol=1e-10, atol=1e-12, **kwargs):
    fused, plain = FUSED.get(name) or getattr(ops, name), getattr(reference, name)
    with lora_np.no_grad():
        weights = rng.standard_normal(fused(*inputs, **kwargs).shape)
    y_fused, g_fused = _value_and_grads(lambda *t: fused(*t, **kwargs), inputs, weights)
    y_plain, g_plain = _value_and_grads(lambda *t: plain(*t, **kwargs), inputs, weights)
    assert_close(y_fused, y_plain, rtol=rtol, atol=atol)
    for gf, gp in zip(g_fused, g_plain):
        assert (gf is None) == (gp is None)
        if gf is not None:
            assert_close(gf, gp, rtol=rtol, atol=atol)


@pytest.mark.parametrize("x_shape", [(5, 4), (2, 3, 4)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear(x_shape, with_bias, rng):
    inputs = [leaf(rng, *x_shape), leaf(rng, 4, 6)] + ([leaf(rng, 6)] if with_bias else [])
    assert_same_as_reference("linear", inputs, rng)


@pytest.mark.parametrize("dropout_p", [0.0, 0.3])
@pytest.mark.parametrize("frozen", [True, False])
def test_lora_linear(dropout_p, frozen, rng):
    x, w, b, a, bb = leaf(rng, 2, 70, 6), leaf(rng, 6, 5), leaf(rng, 5), leaf(rng, 3, 6), leaf(rng, 5, 3)
    w.requires_grad = b.requires_grad = not frozen
    assert_same_as_reference("lora_linear", [x, w, b, a, bb], rng, scaling=0.75, dropout_p=dropout_p)


@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm(affine, rng):
    x = leaf(rng, 3, 70, 8)
    x.data += 4.0  # a mean far from 0
    assert_same_as_reference("layer_norm", [x] + ([leaf(rng, 8), leaf(rng, 8)] if affine else []), rng)


def test_gelu(rng):
    x = leaf(rng, 4, 300)
    x.data *= 4  # both tails
    assert_same_as_reference("gelu", [x], rng)


@pytest.mark.parametrize("t", [5, 150])  # 150 > the query chunk: the causal key skipping is exercised
@pytest.mark.parametrize("dropout_p", [0.0, 0.2])
def test_causal_self_attention(t, dropout_p, rng):
    qkv = leaf(rng, 2, t, 3 * 8)
    assert_same_as_reference("causal_self_attention", [qkv], rng, rtol=1e-9, atol=1e-11, n_head=2,
                             dropout_p=dropout_p)


@pytest.mark.parametrize("shape", [(6, 7), (2, 3, 7)])
def test_cross_entropy(shape, rng):
    logits = leaf(rng, *shape)
    targets = rng.integers(0, shape[-1], size=shape[:-1])
    targets.reshape(-1)[1] = -1  # one ignored row
    assert_same_as_reference("cross_entropy", [logits], rng, targets=targets)


@pytest.mark.parametrize("x_shape", [(2, 70, 6), (2, 6)], ids=["rows-split", "columns-split"])
@pytest.mark.parametrize("dropout_p", [0.0, 0.3])
@pytest.mark.parametrize("trained_w", [False, True])
def test_linear_and_lora_linear_on_both_gemm_splits(x_shape, dropout_p, trained_w, rng):
    """Few rows (a weight bigger than the input) split a GEMM by columns, many rows by rows."""
    x, w, b, a, bb = leaf(rng, *x_shape), leaf(rng, 6, 9), leaf(rng, 9), leaf(rng, 3, 6), leaf(rng, 9, 3)
    w.requires_grad = b.requires_grad = trained_w
    assert_same_as_reference("linear", [x, w, b], rng)
    assert_same_as_reference("lora_linear", [x, w, b, a, bb], rng, scaling=0.75, dropout_p=dropout_p)


@pytest.mark.parametrize("dropout_p", [0.0, 0.3])
@pytest.mark.parametrize("detach_norm", [True, False])
@pytest.mark.parametrize("x_shape", [(2, 70, 6), (3, 6)], ids=["rows-split", "columns-split"])
def test_dora_linear(dropout_p, detach_norm, x_shape, rng):
    x, w, b, a, bb = leaf(rng, *x_shape), leaf(rng, 6, 5), leaf(rng, 5), leaf(rng, 3, 6), leaf(rng, 5, 3)
    m = leaf(rng, 5, positive=True)
    assert_same_as_reference("dora_linear", [x, w, b, a, bb, m], rng, scaling=0.8, dropout_p=dropout_p,
                             detach_norm=detach_norm)


def test_dora_linear_with_a_given_norm(rng):
    x, w, a, bb, m = leaf(rng, 4, 6), leaf(rng, 6, 5), leaf(rng, 3, 6), leaf(rng, 5, 3), leaf(rng, 5, positive=True)
    norm = Tensor(rng.uniform(0.5, 2.0, 5))
    assert_same_as_reference("dora_linear", [x, w, None, a, bb, m], rng, scaling=0.8, weight_norm=norm)


@pytest.mark.parametrize("vocab", [7, 300])
@pytest.mark.parametrize("frozen_embedding", [False, True])
def test_lm_head_loss(vocab, frozen_embedding, rng):
    h, w = leaf(rng, 3, 5, 8), leaf(rng, vocab, 8)
    w.requires_grad = not frozen_embedding
    targets = rng.integers(0, vocab, size=(3, 5))
    targets[1, 2] = -1  # one ignored row
    assert_same_as_reference("lm_head_loss", [h, w], rng, targets=targets, rows_per_chunk=4, block=16)


def test_references_have_the_fused_signatures():
    import inspect
    for name in ("linear", "lora_linear", "dora_linear", "layer_norm", "gelu", "causal_self_attention",
                 "cross_entropy", "lm_head_loss"):
        fused = FUSED.get(name) or getattr(ops, name)
        assert inspect.signature(getattr(reference, name)) == inspect.signature(fused), name
        assert f"ops.reference.{name}" in fused.__doc__, name
