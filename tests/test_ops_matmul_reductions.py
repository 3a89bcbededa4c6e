"""matmul (batched, broadcasting, vectors) and sum/mean/max: gradchecks, NumPy forward values,
and hypothesis properties of reductions over random axes."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lora_np import Tensor, gradcheck, ops, to_numpy
from helpers import leaf

MATMUL_SHAPES = [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)), ((5, 1, 3, 2), (4, 2, 6)),
                 ((4,), (4, 3)), ((3, 4), (4,)), ((4,), (4,)), ((2, 3, 4), (4,)), ((3, 4), (2, 4, 5))]


@pytest.mark.parametrize("a_shape,b_shape", MATMUL_SHAPES)
def test_matmul_gradcheck_and_forward(a_shape, b_shape, rng):
    a, b = leaf(rng, *a_shape), leaf(rng, *b_shape)
    assert gradcheck(ops.matmul, [a, b])
    np.testing.assert_allclose(to_numpy(a @ b), to_numpy(a) @ to_numpy(b), rtol=1e-12)


def test_matmul_batch_mismatch_names_shapes(rng):
    with pytest.raises(ValueError, match=r"\(2, 3, 4\).*\(3, 4, 5\)"):
        leaf(rng, 2, 3, 4) @ leaf(rng, 3, 4, 5)


@pytest.mark.parametrize("axis,keepdims", [(None, False), (0, False), (1, True), ((0, 2), False), (-1, True)])
@pytest.mark.parametrize("op,np_op", [(ops.sum, np.sum), (ops.mean, np.mean), (ops.max, np.max)])
def test_reduction_gradcheck_and_forward(op, np_op, axis, keepdims, rng):
    x = leaf(rng, 2, 3, 4)
    assert gradcheck(lambda t: op(t, axis=axis, keepdims=keepdims), [x])
    np.testing.assert_allclose(to_numpy(op(x, axis=axis, keepdims=keepdims)),
                               np_op(to_numpy(x), axis=axis, keepdims=keepdims), rtol=1e-13)


def test_max_splits_the_gradient_between_ties():
    x = Tensor(np.array([[1.0, 3.0, 3.0], [2.0, 0.0, -1.0]]), requires_grad=True)
    x.max(axis=1).sum().backward()
    np.testing.assert_allclose(to_numpy(x.grad), [[0, 0.5, 0.5], [1, 0, 0]])


def test_reduction_axis_out_of_range(rng):
    with pytest.raises(ValueError, match="axis 3 is out of range"):
        leaf(rng, 2, 3).sum(axis=3)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ndim=st.integers(1, 4), data=st.data())
def test_reduction_gradient_shape_and_value(ndim, data):
    """Property: for L = Σ mean(x, axes), dL/dx = 1/(product of reduced sizes) everywhere."""
    shape = tuple(data.draw(st.lists(st.integers(1, 4), min_size=ndim, max_size=ndim)))
    axes = tuple(sorted(set(data.draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim)))))
    keepdims = data.draw(st.booleans())
    x = Tensor(np.ones(shape), requires_grad=True)
    y = x.mean(axis=axes, keepdims=keepdims)
    assert y.shape == np.ones(shape).mean(axis=axes, keepdims=keepdims).shape
    y.sum().backward()
    n = int(np.prod([shape[a] for a in axes]))
    assert x.grad.shape == shape
    np.testing.assert_allclose(to_numpy(x.grad), np.full(shape, 1.0 / n))
