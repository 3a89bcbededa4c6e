"""Fused softmax + cross-entropy over a vocabulary: the training loss of a language model.

For one row of logits z and target t:  L = log Σⱼ e^zⱼ - z_t,  and  dL/dz = softmax(z) - onehot(t).
Over the N rows that count (target != ignore_index) the loss is the mean, so each row's gradient is
divided by N. One op computes both: the probabilities of the forward pass become the gradient
buffer of the backward pass in place (llm.c does the same).
"""

import numpy as np

from .. import backend
from ..autograd import Tensor
from .index_arrays import as_index_array


def validated_targets(targets, n_rows, vocab, ignore_index):
    """Targets as a flat int array of the backend, and how many of them count."""
    t = as_index_array(targets, vocab, "cross_entropy targets", ignore=ignore_index)
    if t.size != n_rows:
        raise ValueError(f"cross_entropy: {t.size} targets for {n_rows} rows of logits; the targets' shape "
                         f"must be the logits' shape without the last (vocabulary) axis")
    host = targets.data if isinstance(targets, Tensor) else targets
    n = int((np.asarray(host) != ignore_index).sum()) if isinstance(host, (np.ndarray, list, tuple)) \
        else int((t != ignore_index).sum())
    if n == 0:
        raise ValueError(f"cross_entropy: every target equals ignore_index={ignore_index}; there is nothing to average")
    return t.reshape(-1), n


def cross_entropy(logits, targets, ignore_index=-1):
    """Mean over rows of -log softmax(logits)[target], computed stably and fused with its backward
    (derived in the nested ``backward``'s docstring and the module's; notebook 01 asks it as an exercise).

    ``logits``: (N, V) or (B, T, V); ``targets``: ints of shape (N,) or (B, T); rows whose target
    is ``ignore_index`` add nothing to the loss or the gradient.
    Plain version: ``lora_np.ops.reference.cross_entropy``.
    """
    xp = backend.xp
    if logits.ndim < 2:
        raise ValueError(f"cross_entropy: logits need shape (N, V) or (B, T, V); got {logits.shape}")
    vocab = logits.shape[-1]
    z = logits.data.reshape(-1, vocab)
    t, n = validated_targets(targets, z.shape[0], vocab, ignore_index)
    keep = t != ignore_index
    rows = xp.arange(z.shape[0])
    t = xp.where(keep, t, 0)

    probs = z - z.max(axis=1, keepdims=True)  # shifted logits; becomes the probabilities in place
    shifted_target = probs[rows, t]
    xp.exp(probs, out=probs)
    sums = probs.sum(axis=1)
    probs /= sums[:, None]
    row_loss = xp.log(sums) - shifted_target  # log Σ e^z - z_t, with the max subtracted from both
    loss = xp.asarray((row_loss * keep).sum(dtype=z.dtype) / n, dtype=z.dtype)
    logits_shape = logits.shape

    def backward(g):
        """dL/dz = (softmax(z) - onehot(t)) / N: L = log Σⱼ e^zⱼ - z_t gives e^zⱼ / Σ e^z - [j = t] per row,
        and the mean over the N counted rows divides by N; ignored rows get 0."""
        grad = probs  # reused in place: the graph is used once, so this buffer is ours
        grad[rows, t] -= 1
        if n < keep.size:
            grad[~keep] = 0
        grad *= g / n
        return (grad.reshape(logits_shape),)

    return Tensor._from_op(loss, (logits,), backward)
