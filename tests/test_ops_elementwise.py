"""Elementwise ops: float64 gradchecks over broadcasting shapes, forward values against NumPy,
and hypothesis property tests of the broadcasting/reduction rule."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import broadcastable_shapes

from lora_np import Tensor, gradcheck, ops, to_numpy
from helpers import leaf

SHAPE_PAIRS = [((3,), (3,)), ((2, 3), (3,)), ((4, 1), (1, 5)), ((2, 1, 3), (4, 3)), ((), (2, 2))]


@pytest.mark.parametrize("a_shape,b_shape", SHAPE_PAIRS)
@pytest.mark.parametrize("op", [ops.add, ops.sub, ops.mul, ops.div])
def test_binary_op_gradcheck(op, a_shape, b_shape, rng):
    a, b = leaf(rng, *a_shape), leaf(rng, *b_shape, positive=True)
    assert gradcheck(op, [a, b])


@pytest.mark.parametrize("op,np_op,positive", [
    (ops.exp, np.exp, False), (ops.log, np.log, True), (ops.tanh, np.tanh, False),
    (ops.sqrt, np.sqrt, True), (ops.neg, np.negative, False)])
@pytest.mark.parametrize("shape", [(5,), (2, 3), (2, 1, 4)])
def test_unary_op_gradcheck_and_forward(op, np_op, positive, shape, rng):
    x = leaf(rng, *shape, positive=positive)
    assert gradcheck(op, [x])
    np.testing.assert_allclose(to_numpy(op(x)), np_op(to_numpy(x)), rtol=1e-13)


@pytest.mark.parametrize("p", [2, 3, 0.5, -1.5, 1])
def test_pow_gradcheck(p, rng):
    x = leaf(rng, 2, 3, positive=True)
    assert gradcheck(lambda t: t ** p, [x])
    np.testing.assert_allclose(to_numpy(x ** p), to_numpy(x) ** p, rtol=1e-13)


def test_pow_exponent_must_be_a_scalar(rng):
    x = leaf(rng, 2)
    with pytest.raises(TypeError, match="exponent"):
        ops.pow(x, x)


def test_scalar_operands_on_either_side(rng):
    x = leaf(rng, 3, positive=True)
    assert gradcheck(lambda t: 2.0 - t / 3.0 + 1.0 / t * 4.0 - t * 0.5 + 7.0, [x])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shapes=broadcastable_shapes(shape=(3, 4), min_dims=0, max_dims=3, min_side=1, max_side=4),
       data=st.data())
def test_broadcast_gradient_is_a_sum_over_stretched_axes(shapes, data):
    """Property: for y = a * b, dL/da (L = Σ y) equals b summed over the axes a was broadcast on."""
    a_shape, b_shape = (3, 4), shapes
    seed = data.draw(st.integers(0, 2**16))
    r = np.random.default_rng(seed)
    a = Tensor(r.standard_normal(a_shape), requires_grad=True)
    b = Tensor(r.standard_normal(b_shape), requires_grad=True)
    (a * b).sum().backward()
    out_shape = np.broadcast_shapes(a_shape, b_shape)
    full_a = np.broadcast_to(to_numpy(a), out_shape)
    expected_b = full_a.sum(axis=tuple(range(len(out_shape) - len(b_shape))))
    for i, n in enumerate(b_shape):
        if n == 1:
            expected_b = expected_b.sum(axis=i, keepdims=True)
    assert b.grad.shape == b_shape and a.grad.shape == a_shape
    np.testing.assert_allclose(to_numpy(b.grad), expected_b, rtol=1e-12)
