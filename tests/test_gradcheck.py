"""gradcheck itself must be able to fail: a deliberately wrong backward is caught and located."""

import numpy as np
import pytest

from lora_np import GradcheckError, Tensor, gradcheck, ops
from helpers import leaf


def wrong_square(x):
    """y = x², with a backward that is off by a factor at one element."""
    def backward(g):
        grad = 2 * x.data * g
        grad.reshape(-1)[3] *= 1.01
        return (grad,)
    return Tensor._from_op(x.data ** 2, (x,), backward)


def test_a_wrong_backward_is_caught_at_its_index(rng):
    x = leaf(rng, 2, 3)
    with pytest.raises(GradcheckError, match=r"input 0 .*index \(1, 0\).*analytic .*numeric"):
        gradcheck(wrong_square, [x])


def test_a_right_backward_passes_and_grads_are_restored(rng):
    x = leaf(rng, 2, 3)
    x.grad = None
    assert gradcheck(lambda t: t * t, [x])
    assert x.grad is None


def test_float32_inputs_are_refused(rng):
    with pytest.raises(TypeError, match="float64"):
        gradcheck(ops.exp, [leaf(rng, 3, dtype=np.float32)])


def test_no_input_requiring_grad_is_refused():
    with pytest.raises(ValueError, match="requires_grad"):
        gradcheck(ops.exp, [Tensor(np.ones(3))])


def test_tuple_outputs_and_constant_inputs(rng):
    a, c = leaf(rng, 3), Tensor(rng.standard_normal(3))
    assert gradcheck(lambda a, c: (a * c, ops.exp(a)), [a, c])
