"""reshape, transpose/permute, getitem (basic and advanced), concatenate/split/stack."""

import numpy as np
import pytest

from lora_np import gradcheck, ops, to_numpy
from helpers import leaf


@pytest.mark.parametrize("shape,new", [((2, 3, 4), (6, 4)), ((2, 3, 4), (-1,)), ((4, 6), (2, 2, 6))])
def test_reshape(shape, new, rng):
    x = leaf(rng, *shape)
    assert gradcheck(lambda t: t.reshape(new) * 2.0, [x])
    np.testing.assert_array_equal(to_numpy(x.reshape(new)), to_numpy(x).reshape(new))


def test_reshape_error_names_shapes(rng):
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4,\)"):
        leaf(rng, 2, 3).reshape(4)


@pytest.mark.parametrize("axes", [None, (1, 0, 2), (2, 0, 1), (0, 2, 1)])
def test_transpose_permute(axes, rng):
    x = leaf(rng, 2, 3, 4)
    w = leaf(rng, *np.empty((2, 3, 4)).transpose(axes).shape)
    assert gradcheck(lambda t: ops.transpose(t, axes) * w, [x])
    np.testing.assert_array_equal(to_numpy(ops.transpose(x, axes)), to_numpy(x).transpose(axes))
    if axes is not None:
        np.testing.assert_array_equal(to_numpy(x.permute(*axes)), to_numpy(x).transpose(axes))


@pytest.mark.parametrize("axis1, axis2", [(1, 2), (-1, -2), (0, -1), (1, 1)])
def test_swapaxes(axis1, axis2, rng):
    x = leaf(rng, 2, 3, 4)
    w = leaf(rng, *np.empty((2, 3, 4)).swapaxes(axis1, axis2).shape)
    assert gradcheck(lambda t: t.swapaxes(axis1, axis2) * w, [x])
    np.testing.assert_array_equal(to_numpy(x.swapaxes(axis1, axis2)), to_numpy(x).swapaxes(axis1, axis2))


def test_swapaxes_rejects_an_axis_out_of_range(rng):
    with pytest.raises(ValueError, match=r"axis 3 .*\(2, 3\)"):
        leaf(rng, 2, 3).swapaxes(0, 3)


def test_transpose_rejects_non_permutation(rng):
    with pytest.raises(ValueError, match="permutation"):
        ops.transpose(leaf(rng, 2, 3), (0, 0))


@pytest.mark.parametrize("index", [
    (slice(None), 1), (slice(1, None), slice(None, None, 2)), (Ellipsis, -1), (0,), (None, 1),
    (np.array([0, 0, 1]),), (slice(None), np.array([2, 0, 2, 2])), (np.array([[0, 1], [1, 1]]), 1)],
    ids=["col", "slices", "ellipsis", "row", "newaxis", "repeat-rows", "repeat-cols", "2d-index"])
def test_getitem_gradcheck_and_forward(index, rng):
    x = leaf(rng, 2, 3, 4)
    assert gradcheck(lambda t: t[index], [x])
    np.testing.assert_array_equal(to_numpy(x[index]), to_numpy(x)[index])


def test_getitem_repeated_index_sums_gradients():
    from lora_np import Tensor
    x = Tensor(np.zeros(3), requires_grad=True)
    x[np.array([1, 1, 1, 2])].sum().backward()
    np.testing.assert_array_equal(to_numpy(x.grad), [0, 3, 1])


def test_getitem_out_of_range_is_an_index_error(rng):
    with pytest.raises(IndexError, match=r"shape \(2, 3\)"):
        leaf(rng, 2, 3)[5]


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concatenate_and_stack(axis, rng):
    a, b, c = leaf(rng, 2, 3, 4), leaf(rng, 2, 3, 4), leaf(rng, 2, 3, 4)
    assert gradcheck(lambda *t: ops.concatenate(t, axis=axis) * 1.5, [a, b, c])
    assert gradcheck(lambda *t: ops.stack(t, axis=axis) * 1.5, [a, b, c])
    np.testing.assert_array_equal(to_numpy(ops.concatenate([a, b], axis=axis)),
                                  np.concatenate([to_numpy(a), to_numpy(b)], axis=axis))
    np.testing.assert_array_equal(to_numpy(ops.stack([a, b], axis=axis)),
                                  np.stack([to_numpy(a), to_numpy(b)], axis=axis))


def test_concatenate_of_mismatched_shapes(rng):
    with pytest.raises(ValueError, match="concatenate"):
        ops.concatenate([leaf(rng, 2, 3), leaf(rng, 3, 4)], axis=0)


@pytest.mark.parametrize("sections,axis", [(2, 0), (3, 1), ([1, 3], 2)])
def test_split(sections, axis, rng):
    x = leaf(rng, 2, 3, 4)
    pieces = ops.split(x, sections, axis=axis)
    for got, want in zip(pieces, np.split(to_numpy(x), sections, axis=axis)):
        np.testing.assert_array_equal(to_numpy(got), want)
    weights = [float(i + 1) for i in range(len(pieces))]
    assert gradcheck(lambda t: ops.concatenate(
        [p * w for p, w in zip(ops.split(t, sections, axis=axis), weights)], axis=axis), [x])


def test_split_into_unequal_sections_is_refused(rng):
    with pytest.raises(ValueError, match="equal sections"):
        ops.split(leaf(rng, 5), 2)
