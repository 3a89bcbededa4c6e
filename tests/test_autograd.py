"""The engine: Tensor construction, backward() semantics, accumulation, graph freeing, no_grad, dtypes.

Oracles: closed forms (d/dx of x·x is 2x, of a 10,000-step product is a known power) and NumPy.
"""

import sys

import numpy as np
import pytest

import lora_np as ln
from lora_np import Tensor, ops, to_numpy


def test_python_floats_become_float32_and_arrays_keep_dtype():
    assert Tensor([1.0, 2.0]).dtype == np.float32
    assert Tensor(np.zeros(3, dtype=np.float64)).dtype == np.float64
    assert Tensor(np.zeros(3, dtype=np.float32)).dtype == np.float32
    assert Tensor([1, 2]).dtype.kind == "i"
    assert Tensor([1.0], dtype=np.float64).dtype == np.float64


@pytest.mark.parametrize("bad", [["a", "b"], np.array(["x"]), np.array([object()], dtype=object), {"a": 1}])
def test_non_numeric_data_is_a_type_error(bad):
    with pytest.raises(TypeError, match="numeric|number"):
        Tensor(bad)


def test_only_float_tensors_can_require_grad():
    with pytest.raises(TypeError, match="floating"):
        Tensor([1, 2, 3], requires_grad=True)


def test_tensor_facts_and_host_copies():
    t = Tensor(np.arange(6, dtype=np.float32).reshape(2, 3))
    assert t.shape == (2, 3) and t.ndim == 2 and t.size == 6 and t.dtype == np.float32
    host = t.numpy()
    assert isinstance(host, np.ndarray)
    host[0, 0] = 99  # a copy: the tensor is unchanged
    assert to_numpy(t)[0, 0] == 0
    assert Tensor([[3.5]]).item() == 3.5
    with pytest.raises(ValueError, match="one element"):
        t.item()


def test_backward_of_a_square_is_two_x():
    x = Tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    (x * x).sum().backward()
    np.testing.assert_allclose(to_numpy(x.grad), [2.0, -4.0, 6.0])


def test_backward_on_non_scalar_needs_grad():
    x = Tensor(np.ones((2, 2)), requires_grad=True)
    y = x * 3.0
    with pytest.raises(RuntimeError, match="pass grad="):
        y.backward()
    y.backward(np.full((2, 2), 2.0))
    np.testing.assert_allclose(to_numpy(x.grad), np.full((2, 2), 6.0))


def test_backward_grad_of_wrong_shape_is_a_value_error():
    x = Tensor(np.ones((2, 2)), requires_grad=True)
    with pytest.raises(ValueError, match=r"\(3,\).*\(2, 2\)"):
        (x * 1.0).backward(np.ones(3))


def test_backward_without_any_grad_input_is_an_error():
    with pytest.raises(RuntimeError, match="does not require grad"):
        (Tensor([1.0]) * 2.0).sum().backward()


def test_gradients_accumulate_until_zeroed():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    (x * 3.0).sum().backward()
    (x * 3.0).sum().backward()
    np.testing.assert_allclose(to_numpy(x.grad), [6.0, 6.0])
    x.zero_grad()
    (x * 3.0).sum().backward()
    np.testing.assert_allclose(to_numpy(x.grad), [3.0, 3.0])


def test_graph_is_freed_after_backward():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = (x * x).sum()
    y.backward()
    assert y._node.parents == ()
    with pytest.raises(RuntimeError, match="freed"):
        y.backward()


@pytest.mark.parametrize("weight_trains", [True, False])
def test_activations_live_only_while_a_backward_needs_them(weight_trains):
    """Nodes point to nodes, not tensors: the input of a linear layer is kept for the backward only
    if its weight trains (dL/dW = XᵀG needs it); with a frozen weight it is freed at once."""
    import gc
    import weakref
    x = Tensor(np.ones((4, 3)), requires_grad=True)
    w = Tensor(np.ones((3, 2)), requires_grad=weight_trains)
    h = ops.layer_norm(x * 2.0)
    buffer = h.data if h.data.base is None else h.data.base  # the memory, not just this view of it
    probe = weakref.ref(buffer)
    del buffer
    y = ops.linear(h, w)
    del h
    gc.collect()
    assert (probe() is not None) == weight_trains
    y.sum().backward()
    assert x.grad is not None


def _rms_norm_producer(rng):
    x, w = (Tensor(rng.standard_normal(s), requires_grad=True) for s in ((2, 3, 8), (8,)))
    return (x, w), lambda x, w: ops.rms_norm(x, w)


def _layer_norm_producer(rng):
    x, w, b = (Tensor(rng.standard_normal(s), requires_grad=True) for s in ((2, 3, 8), (8,), (8,)))
    return (x, w, b), lambda x, w, b: ops.layer_norm(x, w, b)


def _swiglu_producer(rng):
    a, b = (Tensor(rng.standard_normal((2, 3, 8)), requires_grad=True) for _ in range(2))
    return (a, b), lambda a, b: ops.swiglu(a, b)


def _lora_consumer(x, A, B):
    w = Tensor(np.linspace(-1.0, 1.0, 8 * 5).reshape(8, 5))  # frozen base
    return ops.lora_linear(x, w, None, A, B, 2.0)


def _matmul_consumer(x, A, B):  # the adapter composed of matmuls, as a quantized base's LoRA layer runs it
    return ops.matmul(ops.matmul(x, A.T), B.T)


@pytest.mark.parametrize("producer", [_rms_norm_producer, _layer_norm_producer, _swiglu_producer])
@pytest.mark.parametrize("consumer", [_lora_consumer, _matmul_consumer])
def test_an_input_its_producer_remakes_is_not_kept(producer, consumer, rng):
    """``saved_data``: a LoRA adapter needs its input X for dL/dA = (dL/dH)ᵀ X. When X is RMSNorm's
    y = x̂ ⊙ w, LayerNorm's x̂ ⊙ w + b or SwiGLU's h = silu(a) ⊙ b, whose ops keep x̂ (a and b) anyway,
    the adapter keeps their remake instead: X's memory is freed after the forward, the remade X equals
    it bit for bit, and the gradients still agree with central differences (float64)."""
    import gc
    import weakref
    inputs, make = producer(rng)
    A, B = Tensor(rng.standard_normal((4, 8)), requires_grad=True), Tensor(rng.standard_normal((5, 4)),
                                                                          requires_grad=True)
    x = make(*inputs)
    first = x.data.copy()
    assert np.array_equal(x._node.remake(), first)              # the same bits
    probe = weakref.ref(x.data if x.data.base is None else x.data.base)
    y = consumer(x, A, B)
    del x
    gc.collect()
    assert probe() is None                                       # nothing kept it
    y.sum().backward()
    assert A.grad is not None
    n = len(inputs)
    assert ln.gradcheck(lambda *t: consumer(make(*t[:n]), *t[n:]), [*inputs, A, B])


def test_shared_subexpression_gets_both_contributions():
    # y = a·b + a, with a used twice: dy/da = b + 1
    a = Tensor(np.array([2.0, 3.0]), requires_grad=True)
    b = Tensor(np.array([5.0, 7.0]), requires_grad=True)
    (a * b + a).sum().backward()
    np.testing.assert_allclose(to_numpy(a.grad), [6.0, 8.0])
    np.testing.assert_allclose(to_numpy(b.grad), [2.0, 3.0])


def test_leaf_gradients_never_alias_each_other():
    a = Tensor(np.ones(3), requires_grad=True)
    b = Tensor(np.ones(3), requires_grad=True)
    (a + b).sum().backward()  # add hands the same upstream array to both parents
    a.grad *= 10.0
    np.testing.assert_allclose(to_numpy(b.grad), np.ones(3))


def _op(x, backward):
    return Tensor._from_op(x.data * 1.0, (x,), backward)


def test_owned_gradients_reach_a_leaf_without_a_copy_and_others_are_copied():
    """The walk copies only what it must: a fresh array a closure returns becomes the leaf's .grad
    as it is; one it passed through, a view, or one it handed to two inputs is copied (once)."""
    xp = ln.backend.xp
    x = Tensor(xp.ones((2, 3)), requires_grad=True)
    fresh = xp.full((2, 3), 2.0)
    _op(x, lambda g: (fresh,)).backward(xp.ones((2, 3)))
    assert x.grad is fresh
    for backward in (lambda g: (g,), lambda g: (fresh.reshape(3, 2).T.T.reshape(2, 3)[:, :],)):
        x.grad = None
        _op(x, backward).backward(xp.ones((2, 3)))
        assert x.grad is not fresh and x.grad.flags.owndata
    y, z = Tensor(xp.ones(3), requires_grad=True), Tensor(xp.ones(3), requires_grad=True)
    shared = xp.full(3, 4.0)
    Tensor._from_op(y.data + z.data, (y, z), lambda g: (shared, shared)).backward(xp.ones(3))
    assert (y.grad is shared) != (z.grad is shared)  # the first input keeps it, the second gets a copy
    y.grad += 1.0
    np.testing.assert_array_equal(to_numpy(z.grad), [4.0] * 3)


def test_a_fresh_gradient_is_not_copied_when_it_reuses_a_freed_arrays_id():
    """Down a chain each closure returns a fresh array and the one before it is freed, so CPython
    gives a new array a freed one's id: the leaf still keeps the last one as it is, no copy."""
    xp = ln.backend.xp
    x = Tensor(xp.ones((2, 3)), requires_grad=True)
    ids, last = [], [None]

    def fresh(g):
        last[0] = g * 2.0  # only the newest is held here: the older ones are freed down the chain
        ids.append(id(last[0]))
        return (last[0],)

    y = x
    for _ in range(8):
        y = _op(y, fresh)
    y.backward(xp.ones((2, 3)))
    assert len(set(ids)) < len(ids)  # ids were reused (what made the walk copy before)
    assert x.grad is last[0]
    np.testing.assert_array_equal(to_numpy(x.grad), np.full((2, 3), 256.0))


def test_user_grad_argument_is_not_aliased():
    x = Tensor(np.ones(3), requires_grad=True)
    g = ln.backend.xp.ones(3)
    (x + 0.0).backward(g)
    x.grad *= 5.0
    np.testing.assert_allclose(to_numpy(g), np.ones(3))


def test_ten_thousand_op_chain_does_not_hit_the_recursion_limit():
    x = Tensor(np.array([1.0]), requires_grad=True)
    y = x
    n = 10_000
    assert n > sys.getrecursionlimit()
    for _ in range(n):
        y = y * 1.0001
    y.sum().backward()
    np.testing.assert_allclose(to_numpy(x.grad), [1.0001 ** n], rtol=1e-9)


def test_no_grad_records_nothing():
    x = Tensor(np.ones(2), requires_grad=True)
    with ln.no_grad():
        y = x * 2.0
        assert not ln.is_grad_enabled()
    assert ln.is_grad_enabled()
    assert not y.requires_grad and y._node is None

    @ln.no_grad()
    def f(t):
        return t * 2.0

    assert not f(x).requires_grad


def test_detach_cuts_the_graph():
    x = Tensor(np.ones(2), requires_grad=True)
    y = (x * 2.0).detach() * x
    y.sum().backward()
    np.testing.assert_allclose(to_numpy(x.grad), [2.0, 2.0])


def test_mixing_float32_and_float64_is_refused():
    a = Tensor(np.ones(2, dtype=np.float32))
    b = Tensor(np.ones(2, dtype=np.float64))
    for op in (ops.add, ops.mul, ops.sub, ops.div, ops.matmul):
        with pytest.raises(TypeError, match="float32.*float64|float64.*float32"):
            op(a, b)


def test_python_scalars_and_int_arrays_keep_float32():
    a = Tensor(np.ones((2, 2), dtype=np.float32), requires_grad=True)
    for y in (a * 2.5, 2.5 * a, a + 1, 1 - a, a / 3.0, 3.0 / a, a ** 2, a * np.float64(2.0),
              a * np.array([1, 2]), ops.exp(a), ops.sqrt(a), ops.tanh(a), ops.log(a)):
        assert y.dtype == np.float32
    y = (a * 2.5 + 1).sum()
    y.backward()
    assert a.grad.dtype == np.float32


def test_broadcast_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4,\)"):
        Tensor(np.ones((2, 3))) + Tensor(np.ones(4))


def test_matmul_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4, 5\)"):
        Tensor(np.ones((2, 3))) @ Tensor(np.ones((4, 5)))


def test_operators_match_numpy(rng):
    a_np, b_np = rng.standard_normal((3, 4)), rng.standard_normal((4,))
    a, b = Tensor(a_np), Tensor(b_np)
    cases = [(a + b, a_np + b_np), (a - b, a_np - b_np), (a * b, a_np * b_np), (a / b, a_np / b_np),
             (-a, -a_np), (a ** 3, a_np ** 3), (a @ b, a_np @ b_np), (a[1:, ::2], a_np[1:, ::2]),
             (a.T, a_np.T), (a.sum(axis=0), a_np.sum(0)), (a.mean(), a_np.mean()), (a.max(axis=1), a_np.max(1)),
             (2.0 - a, 2.0 - a_np), (1.0 / b, 1.0 / b_np), (a.reshape(2, 6), a_np.reshape(2, 6))]
    for got, want in cases:
        np.testing.assert_allclose(to_numpy(got), want, rtol=1e-12)


def test_float64_works_end_to_end(rng):
    x = Tensor(rng.standard_normal((2, 3, 8)), requires_grad=True)
    w = Tensor(rng.standard_normal((8, 24)), requires_grad=True)
    y = ops.causal_self_attention(ops.linear(x, w), n_head=2)
    loss = ops.cross_entropy(ops.gelu(ops.layer_norm(y)), np.zeros((2, 3), dtype=np.int64))
    loss.backward()
    assert loss.dtype == np.float64 and x.grad.dtype == np.float64 and w.grad.dtype == np.float64
