"""Checks for notebook 01 (autograd): mul, matmul, softmax and cross-entropy backward, and the
topological order that backward() walks."""

import sys

import numpy as np

from lora_np import gradcheck, ops
from lora_np.autograd import Tensor, _topological_order
from lora_np.ops.softmax import softmax_array

from . import ExerciseFailed, as_op, compare, exercise, leaf, random


def engine_grads(op, *arrays, g):
    """The engine's gradients of ``op`` at ``arrays`` for the upstream gradient ``g``."""
    tensors = [leaf(a) for a in arrays]
    op(*tensors).backward(g)
    return [t.grad for t in tensors]


@exercise
def mul_backward(fn):
    a, b, g = random(4, 3), random(3, seed=1), random(4, 3, seed=2)   # b is broadcast over a's rows
    da, db = fn(g, a, b)
    want_a, want_b = engine_grads(ops.mul, a, b, g=g)
    compare("da", da, want_a)
    compare("db", db, want_b)
    gradcheck(as_op(lambda a, b: a * b, fn), [leaf(a), leaf(b)])
    return "matches the engine and central differences (broadcast b summed over rows)"


@exercise
def matmul_backward(fn):
    a, b, g = random(3, 4), random(4, 2, seed=1), random(3, 2, seed=2)
    da, db = fn(g, a, b)
    want_a, want_b = engine_grads(ops.matmul, a, b, g=g)
    compare("da", da, want_a)
    compare("db", db, want_b)
    gradcheck(as_op(lambda a, b: a @ b, fn), [leaf(a), leaf(b)])
    return "matches the engine and central differences"


@exercise
def softmax_backward(fn):
    x, g = random(3, 5), random(3, 5, seed=1)
    y = softmax_array(x)
    dx = fn(g, y)
    compare("dx", dx, engine_grads(ops.softmax, x, g=g)[0])
    gradcheck(as_op(softmax_array, lambda g, x: fn(g, softmax_array(x))), [leaf(x)])
    return "matches the engine and central differences (one row at a time, no Jacobian formed)"


def _mean_cross_entropy(z, t):
    shifted = z - z.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -logp[np.arange(len(t)), t].mean()


@exercise
def cross_entropy_backward(fn):
    z, t = random(4, 6), np.array([1, 0, 5, 2])
    dz = fn(z, t)
    compare("dlogits", dz, engine_grads(lambda z: ops.cross_entropy(z, t), z, g=1.0)[0])
    gradcheck(as_op(lambda z: np.asarray(_mean_cross_entropy(z, t)), lambda g, z: g * fn(z, t)), [leaf(z)])
    large = random(3, 6, seed=3) * 1000.0          # logits of a confident model: e^1000 overflows float64
    with np.errstate(all="ignore"):
        dz_large = np.asarray(fn(large, t[:3]))
    if not np.all(np.isfinite(dz_large)):
        raise ExerciseFailed("for logits of size 1000 your gradient holds inf or nan: e^1000 overflows; "
                             "subtract each row's maximum before exp (softmax is unchanged by a shift)")
    compare("dlogits for logits of size 1000", dz_large,
            engine_grads(lambda z: ops.cross_entropy(z, t[:3]), large, g=1.0)[0])
    return "matches the engine and central differences (softmax − onehot, over N), large logits included"


def walk(order, root, accumulate=True):
    """backward() in eight lines: visit ``order`` from the end, hand each node its gradient, and
    add (``+=``) what flows to each parent. ``accumulate=False`` is the ``=`` bug."""
    grads = {root._node: np.ones_like(root.data)}
    for node in reversed(order):
        g = grads.pop(node, None)
        if g is None:
            continue
        if node.leaf is not None:
            node.leaf().grad = g
            continue
        for parent, pg in zip(node.parents, node.backward(g)):
            if parent is not None and pg is not None:
                grads[parent] = grads[parent] + pg if accumulate and parent in grads else pg


def example_graph(a, b):
    """y = Σ exp(a·b + a) · a: ``a`` feeds three ops, so its gradient is a sum of three paths."""
    return (ops.exp(a * b + a) * a).sum()


def _without_the_engines_sort(fn, root):
    """``fn(root)``, refusing an answer that calls the engine's own ``_topological_order``."""
    called = []

    def watch(frame, event, arg):
        if event == "call" and frame.f_code is _topological_order.__code__:
            called.append(True)
    previous = sys.getprofile()
    sys.setprofile(watch)
    try:
        order = fn(root)
    finally:
        sys.setprofile(previous)
    if called:
        raise ExerciseFailed("your function calls the engine's own _topological_order: write the depth-first "
                             "search yourself (visit a node's inputs, then append the node)")
    return order


@exercise
def topological_order(fn):
    a0, b0 = random(3), random(3, seed=1)
    a, b = leaf(a0), leaf(b0)
    y = example_graph(a, b)
    order = list(_without_the_engines_sort(fn, y._node))
    engine_order = _topological_order(y._node)
    if set(order) != set(engine_order) or len(order) != len(engine_order):
        raise ExerciseFailed(f"the order has {len(order)} nodes ({len(set(order))} distinct); the graph has "
                             f"{len(engine_order)}: every node reachable from the root, each once")
    seen = set()
    for node in order:
        if any(p is not None and p not in seen for p in node.parents):
            raise ExerciseFailed(f"node {node.op!r} comes before one of its inputs: inputs must come first")
        seen.add(node)
    walk(order, y)
    mine = [a.grad, b.grad]
    a2, b2 = leaf(a0), leaf(b0)
    example_graph(a2, b2).backward()
    compare("dy/da after walking your order", mine[0], a2.grad)
    compare("dy/db after walking your order", mine[1], b2.grad)
    eps = 1e-6
    numeric = [(example_graph(Tensor(a0 + eps * e), Tensor(b0)).item()
                - example_graph(Tensor(a0 - eps * e), Tensor(b0)).item()) / (2 * eps) for e in np.eye(3)]
    compare("dy/da against central differences", mine[0], np.array(numeric), atol=1e-6)
    return f"{len(order)} nodes, inputs first; walking it gives the engine's gradients and central differences'"
