"""Gradient checkpointing: a block keeps its input, not its activations, and runs again in the backward.

Training holds every op's saved arrays until the backward reaches it: for a transformer, all the
blocks' activations at once (GPT-2 small at T 1,024, B 2: about 3 GB). A checkpointed block runs its
forward under ``no_grad``, so nothing inside it is saved, and records one node in the graph whose
backward (1) runs the block's forward again on the saved input, this time recording its graph,
(2) backpropagates the incoming gradient dL/dy through that graph, which accumulates the block's
parameter gradients and gives dL/dx, and (3) frees it. Only one block's activations are alive at a
time, for the price of a second forward per block (about a third more arithmetic).

The recomputation must be the same computation, so that the gradients are those of the forward
that made the loss (bit-identical to a run without checkpointing):
- dropout draws its masks from the device generator: a copy of the generator taken before the
  forward is the device generator during the recomputation, which draws the same masks again;
- a module's plain attributes (``training``, the active adapter, a mixed batch's per-row adapter
  groups, which ``adapter_names_per_row`` sets only for the forward's duration) are captured at the
  forward and put back around the recomputation.
Tensor arguments other than the first (e.g. rotary cos/sin) are inputs like x: their gradients
flow back if they require grad.

``is_recomputing()`` is True while a recomputation runs: its graph is backpropagated at once, so an
op may keep in it what it would otherwise compute twice (a quantized base keeps its decoded weight
for dL/dX instead of decoding it again, ``quant/linear_op.py``). What a recomputation keeps that way is
held at the step's peak, beside every checkpointed input, so it is bounded: ``may_keep(nbytes)`` grants
at most KEEP_BYTES per recomputation, first come first served. At SmolLM2-135M's and Qwen3-0.6B's
widths a whole block's decoded weights fit (14 and 60 MiB); at 1-1.5B widths the attention projections
do (22 MiB at Qwen2.5-1.5B) and the MLP's are decoded again in the backward: keeping them all would add
187 MiB (Qwen2.5-1.5B) or 243 MiB (Llama-3.2-1B) to the peak, for a third decode that costs about 2% of
the step.
"""

from .. import generators
from ..autograd import Tensor, enable_grad, no_grad


def module_state(block):
    """(module, its plain attributes) for ``block`` and every submodule: what a forward reads besides
    its parameters (the values are shared, not copied)."""
    state = []
    for _, m in block.named_modules():
        owned = m._parameters.keys() | m._modules.keys() | {"_parameters", "_modules"}
        state.append((m, {k: v for k, v in vars(m).items() if k not in owned}))
    return state


def current_state(state):
    """The modules' present values of the attributes captured in ``state`` (to put back afterwards)."""
    return [(m, {k: getattr(m, k) for k in attributes}) for m, attributes in state]


def _restore(state):
    for m, attributes in state:
        for k, v in attributes.items():
            object.__setattr__(m, k, v)


_recomputing = [0]  # depth of recomputations running (a checkpointed block may hold another)
KEEP_BYTES = 64 << 20  # what one recomputation may keep beyond its graph (``may_keep``)
_kept = [0]            # bytes granted to the recomputation running


def is_recomputing():
    """True inside a checkpointed block's recomputation (its graph is backpropagated right after)."""
    return _recomputing[0] > 0


def may_keep(nbytes):
    """Inside a recomputation, whether an op may keep ``nbytes`` more for its backward (counted if so):
    True while the recomputation's grants stay within KEEP_BYTES; False outside one."""
    if not is_recomputing() or _kept[0] + nbytes > KEEP_BYTES:
        return False
    _kept[0] += nbytes
    return True


def _recompute(forward, args, kwargs, state, generator):
    """The forward again, recording its graph, with the captured module state and dropout generator;
    returns its output and the fresh leaves standing for the Tensor arguments."""
    leaves = [Tensor(a.data, requires_grad=a.requires_grad) if isinstance(a, Tensor) else a for a in args]
    now, kept_outside = current_state(state), _kept[0]
    _restore(state)
    _recomputing[0] += 1
    _kept[0] = 0
    try:
        with enable_grad(), generators.replaying(generator):
            y = forward(*leaves, **kwargs)
    finally:
        _recomputing[0] -= 1
        _kept[0] = kept_outside
        _restore(now)
    return y, leaves


def checkpoint(block, *args, **kwargs):
    """``block.forward(*args, **kwargs)`` keeping only the arguments; recomputed in the backward.

    Returns one Tensor whose graph node has as inputs the Tensor arguments and the block's parameters
    that require grad; its backward accumulates the parameters' gradients (as the un-checkpointed
    graph would) and hands back the arguments' gradients.
    """
    state = module_state(block)
    generator = generators.device_generator_copy()
    with no_grad():
        y = block.forward(*args, **kwargs)
    if not isinstance(y, Tensor):
        raise TypeError(f"gradient checkpointing: {type(block).__name__}.forward must return one Tensor; "
                        f"got {type(y).__name__}")
    tensors = [a for a in args if isinstance(a, Tensor)]
    params = [p for p in block.parameters() if p.requires_grad]

    def backward(g):
        y_again, leaves = _recompute(block.forward, args, kwargs, state, generator)
        if y_again.requires_grad:
            y_again.backward(g)
        grads = [leaf.grad for leaf in leaves if isinstance(leaf, Tensor)]
        return grads + [None] * len(params)   # the parameters' gradients are already accumulated

    return Tensor._from_op(y.data, (*tensors, *params), backward)
