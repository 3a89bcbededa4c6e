"""A reverse-mode autograd engine over arrays: ``Tensor``, the graph of ``Node``s, ``backward()``.

Every op that sees an input requiring grad records a ``Node``: the ``backward(g)`` closure written
next to the op's forward (see ``lora_np/ops``) and the nodes of its inputs. Nodes point to nodes,
not to tensors, so an intermediate array lives only as long as some closure saved it for its
backward (PyTorch's "saved tensors"): a frozen layer that needs no weight gradient does not keep
its input alive. ``backward()`` sorts the nodes topologically (iteratively: a chain of 100,000 ops
is fine) and walks them from the output to the leaves, handing each closure dL/d(output) and
getting one gradient per input back. Leaves accumulate into ``.grad`` (``+=``) until zeroed; each
node is freed as soon as it has been walked.

An op that keeps an *input's* data for its backward asks ``saved_data(x)`` for it. Where x was made by
an op that can remake it, bit for bit, from what that op keeps for its own backward anyway (its
``remake``: RMSNorm's y = x̂ ⊙ w from its x̂, SwiGLU's h = silu(a) ⊙ b from a and b), the consumer
keeps the remake instead of the array, so the output's memory is freed once the forward has used it
(PyTorch's saved-tensor hooks used to recompute cheap activations). In a LoRA step the inputs of the
adapters are such outputs: each layer then holds one array fewer per norm and per MLP.

Operators (``+ - * / @ ** -x x[i]``) and methods (``.sum()``, ``.reshape()``...) are attached in
``lora_np/ops/__init__.py``, next to the ops they call.
"""

import weakref
from operator import attrgetter

import numpy as np

from . import backend, parallel

DEFAULT_DTYPE = np.float32
_grad_enabled = True


class no_grad:
    """Context manager (or decorator) in which ops record no graph: for evaluation and inference."""

    def __enter__(self):
        global _grad_enabled
        self._saved, _grad_enabled = _grad_enabled, False

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self._saved

    def __call__(self, fn):
        def wrapper(*args, **kwargs):
            with type(self)():
                return fn(*args, **kwargs)
        wrapper.__name__, wrapper.__doc__ = fn.__name__, fn.__doc__
        return wrapper


class enable_grad(no_grad):
    """Context manager (or decorator) in which ops record a graph, even inside ``no_grad`` or a
    backward pass (gradient checkpointing recomputes a block's forward there)."""

    def __enter__(self):
        global _grad_enabled
        self._saved, _grad_enabled = _grad_enabled, True


def is_grad_enabled():
    return _grad_enabled


def records_graph(*inputs):
    """Whether an op on these Tensors records a Node (grad mode on and some input requires grad): an
    op may then skip what only its backward needs."""
    return _grad_enabled and any(t._requires_grad for t in inputs)


def _freed_graph(_g):
    raise RuntimeError("the graph behind this tensor was freed by an earlier backward(); "
                       "run the forward pass again before calling backward() a second time")


def _as_array(data, dtype):
    xp = backend.xp
    if isinstance(data, Tensor):
        data = data.data
    if not isinstance(data, xp.ndarray):
        from_python = not isinstance(data, np.ndarray) and not hasattr(data, "__cuda_array_interface__")
        try:
            host = np.asarray(data)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"Tensor data must be a number, a nested list of numbers or an array; "
                            f"got {type(data).__name__} ({exc})") from None
        if host.dtype.kind not in "fiub":
            raise TypeError(f"Tensor data must be numeric (float, int or bool); got dtype {host.dtype}")
        if from_python and host.dtype == np.float64 and dtype is None:
            host = host.astype(DEFAULT_DTYPE)  # Python floats become float32, the default
        data = xp.asarray(host)
    if data.dtype.kind not in "fiub":
        raise TypeError(f"Tensor data must be numeric (float, int or bool); got dtype {data.dtype}")
    if dtype is not None and data.dtype != dtype:
        data = data.astype(dtype)
    return data


class Node:
    """One recorded op: ``backward(g) -> one gradient (or None) per input``, and the inputs' nodes
    (None for inputs that need no gradient). A leaf's node points (weakly) to its Tensor instead.
    ``op`` names the op (the function whose closure ``backward`` is), for pictures of the graph."""

    __slots__ = ("backward", "parents", "leaf", "op", "remake")

    def __init__(self, backward, parents, leaf=None, remake=None):
        self.backward, self.parents, self.leaf, self.remake = backward, parents, leaf, remake
        self.op = "leaf" if leaf is not None else getattr(backward, "op_name", backward.__qualname__.split(".")[0])


class Tensor:
    """An array with an optional gradient and a link to the op that made it.

    ``Tensor(data, requires_grad=False, dtype=None)``: ``data`` may be a number, nested list, NumPy
    array or array of the current backend (kept without copy). Python floats become float32; arrays
    keep their dtype (float64 stays float64). Only floating tensors may require grad.
    Its operators (``a + b``, ``a @ b``, ``a.sum()``, ``a.T`` …) are the functions of ``lora_np.ops``,
    attached by ``ops/__init__.py`` (the ops build Tensors, so this module cannot import them).
    """

    __slots__ = ("data", "grad", "_requires_grad", "_node", "__weakref__")
    __array_ufunc__ = None  # so `ndarray * Tensor` defers to Tensor.__rmul__

    def __init__(self, data, requires_grad=False, dtype=None):
        self.data = _as_array(data, dtype)
        self.grad = None
        self._node = None
        self._requires_grad = False
        self.requires_grad = requires_grad

    def _set_requires_grad(self, value):
        if value and self.data.dtype.kind != "f":
            raise TypeError(f"only floating-point tensors can require grad; got dtype {self.data.dtype}")
        if self._node is not None and self._node.leaf is None:
            raise RuntimeError("requires_grad can only be changed on leaf tensors; use .detach() for a new leaf")
        self._requires_grad = bool(value)
        self._node = None

    # read by every op: attrgetter is a C getter, no Python frame (as the array facts below)
    requires_grad = property(attrgetter("_requires_grad"), _set_requires_grad)

    @classmethod
    def _wrap(cls, data):
        """An array an op or a model just made (of the current backend, numeric), as a Tensor with
        no gradient: ``Tensor(data)`` without ``_as_array``'s checks, for results computed outside the
        graph (generation's attention over the cache)."""
        out = cls.__new__(cls)
        out.data, out.grad, out._node, out._requires_grad = data, None, None, False
        return out

    def _grad_node(self):
        """This tensor's node in the graph; a leaf that requires grad gets one on first use."""
        if self._node is None:
            self._node = Node(None, (), weakref.ref(self))
        return self._node

    @classmethod
    def _from_op(cls, data, parents, backward, remake=None):
        """The output of an op: records a Node only when grad mode is on and an input needs it.
        ``remake``: a function that returns ``data`` again, bit for bit, from arrays ``backward`` keeps
        anyway (``saved_data``)."""
        out = cls.__new__(cls)
        out.data, out.grad, out._node = data, None, None
        out._requires_grad = _grad_enabled and any(p._requires_grad for p in parents)
        if out._requires_grad:
            out._node = Node(backward, tuple(p._grad_node() if p._requires_grad else None for p in parents),
                             remake=remake)
        return out

    # --- array facts -----------------------------------------------------------------------
    shape = property(attrgetter("data.shape"))
    dtype = property(attrgetter("data.dtype"))
    ndim = property(attrgetter("data.ndim"))
    size = property(attrgetter("data.size"))

    @property
    def is_leaf(self):
        return self._node is None or self._node.leaf is not None

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({backend.to_numpy(self.data)!r}{grad})".replace("\n", "\n       ")

    def numpy(self):
        """A host NumPy copy of the data."""
        return backend.to_numpy(self.data)

    def item(self):
        """The value of a one-element tensor as a Python number."""
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element; this one has shape {self.shape}")
        return self.data.reshape(()).item()

    def detach(self):
        """The same data, cut from the graph (no copy)."""
        return Tensor(self.data)

    def astype(self, dtype):
        """A copy with another dtype, cut from the graph (use it on leaves, e.g. to build float64 inputs)."""
        return Tensor(self.data.astype(dtype), requires_grad=self.requires_grad)

    def zero_grad(self):
        self.grad = None

    # --- backward ----------------------------------------------------------------------------
    def backward(self, grad=None):
        """Accumulate the gradient of Σ grad ⊙ self into every leaf's ``.grad``; free the graph on the way.

        ``grad`` defaults to 1 for a one-element tensor; other shapes must pass it explicitly.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad: no input with "
                               "requires_grad=True led to it (or it was made under no_grad())")
        xp = backend.xp
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward() without an argument needs a one-element output; this tensor has "
                                   f"shape {self.shape}: pass grad=, an array of that shape (e.g. ones)")
            grad = xp.ones_like(self.data)
        else:
            grad = xp.array(grad.data if isinstance(grad, Tensor) else grad, dtype=self.dtype, copy=True)
            if grad.shape != self.shape:
                raise ValueError(f"backward(grad): grad has shape {grad.shape}, the tensor has shape {self.shape}")
        with parallel.single_threaded_blas():  # once for the whole pass, not per op
            _run_backward(self._grad_node(), grad)


def _run_backward(root, grad):
    """micrograd's backward over nodes: walk them children before parents (reverse topological
    order), hand each closure the summed gradient of its output, add what it returns to its inputs'
    sums; leaves accumulate into ``.grad``. Each node is freed once walked."""
    sums = _GradientSums(root, grad)
    for node in reversed(_topological_order(root)):
        g, owned = sums.pop(node)
        if g is None:
            continue
        if node.leaf is not None:
            sums.give_to_leaf(node.leaf(), g, owned)
            continue
        sums.next_node()
        for parent, parent_grad in zip(node.parents, node.backward(g)):
            if parent is not None and parent_grad is not None:
                sums.add(parent, parent_grad, incoming=g)
        node.backward, node.parents, node.remake = _freed_graph, (), None


def saved_data(t):
    """What an op keeps of its input Tensor ``t`` for its backward: a function returning ``t.data``.

    When ``t`` is the output of a recorded op that gave a ``remake`` (``Tensor._from_op``), that is the
    function: it builds the array again from what the producing op keeps for its own backward, so the
    consumer holds no copy and ``t``'s memory is freed after the forward. The producer's backward runs
    after the consumer's (it is an input of it), and the remake holds the arrays it reads, so they are
    there when it is called. Otherwise the function returns the array itself, kept."""
    node = t._node
    if node is not None and node.remake is not None:
        return node.remake
    data = t.data
    return lambda: data


class _GradientSums:
    """dL/d(node) for the nodes not walked yet, summed without copying what need not be copied.

    Each entry is ``(array, owned)``. ``owned`` means this walk allocated the array and nothing else
    holds it, so a later contribution is added into it in place and a leaf may keep it as ``.grad``
    as it is. A closure's result is *not* owned when it is the incoming gradient passed through
    (``add``'s backward returns ``g`` itself), a view of another array (``flags.owndata`` False:
    ``reshape``, ``transpose``), or an array the same closure already returned for another input; the
    first addition into such an entry allocates a fresh sum (then owned), and a leaf given one copies it.
    The ops' closures return fresh arrays, views or ``incoming``, so an array can repeat only among one
    closure's results, and the ids are kept for one node's results at a time: those are alive (the
    result tuple holds them), where an id kept longer could be a freed array's, reused by a new array
    (which was then copied needlessly: a dozen weight gradients per step at the learner's S shape).
    """

    def __init__(self, root, grad):
        self._sums = {root: (grad, True)}
        self._handed_out = set()  # ids of the arrays the current node's closure returned so far

    def next_node(self):
        """Called before the results of the next node's closure are added."""
        self._handed_out.clear()

    def pop(self, node):
        """(gradient, owned) of ``node``, or (None, False) if nothing flowed into it."""
        return self._sums.pop(node, (None, False))

    def add(self, node, g, incoming):
        """Add ``g``, returned for input ``node`` by a closure that was given ``incoming``. A sum
        that is not owned is added into ``g`` when ``g`` is (a residual connection: the add passed
        its incoming gradient through, the branch returns a fresh one), so no third array is made."""
        g_owned = g is not incoming and g.flags.owndata and id(g) not in self._handed_out
        self._handed_out.add(id(g))
        if node in self._sums:
            total, owned = self._sums[node]
            if owned:
                parallel.add(total, total, g)  # in place, on all threads when big
            elif g_owned:
                parallel.add(g, g, total)
                self._sums[node] = (g, True)
            else:
                self._sums[node] = (total + g, True)
            return
        self._sums[node] = (g, g_owned)

    @staticmethod
    def give_to_leaf(leaf, g, owned):
        """Accumulate into ``leaf.grad`` (None if the leaf was garbage-collected): a leaf's first
        gradient is an array of its own, a copy only when ``g`` is not owned."""
        if leaf is None:
            return
        if leaf.grad is None:
            leaf.grad = g if owned else g.copy()
        else:
            leaf.grad += g


def trace_graph(tensor):
    """The graph behind ``tensor`` as a list of nodes, inputs first: each a dict with ``id``,
    ``op`` (the op's name, or "leaf"), ``shape`` (leaves only) and ``inputs`` (ids)."""
    if tensor._node is None:
        return []
    order = _topological_order(tensor._node)
    ids = {node: i for i, node in enumerate(order)}
    out = []
    for node in order:
        leaf = node.leaf() if node.leaf is not None else None
        out.append({"id": ids[node], "op": node.op, "shape": None if leaf is None else leaf.shape,
                    "inputs": [ids[p] for p in node.parents if p is not None]})
    return out


def _topological_order(root):
    """Nodes reachable from ``root``, each after all of its parents (iterative DFS post-order)."""
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if node in visited:
            continue
        visited.add(node)
        stack.append((node, True))
        for parent in node.parents:
            if parent is not None and parent not in visited:
                stack.append((parent, False))
    return order


class Parameter(Tensor):
    """A Tensor that is a model weight: requires grad unless frozen."""

    __slots__ = ()

    def __init__(self, data, requires_grad=True, dtype=None):
        super().__init__(data, requires_grad=requires_grad, dtype=dtype)
