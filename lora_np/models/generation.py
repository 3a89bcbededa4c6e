"""Autoregressive generation: one loop for every model family, with the one key/value cache (cache.py).

Each step runs the new positions through the model's own forward, ``model.hidden_states(ids,
cache=cache)``, whose attention layers store their keys and values in the cache and attend over
all of them (transformers' ``past_key_values``); the first step encodes the prompt, every later
one a single token. When the context outgrows the model's ``context_length``, the window slides
(the cache is emptied and the last context_length tokens re-encoded), as in nanoGPT. Sampling
happens on the device; tokens come back to the host once, at the end.

Stopping (``stop_token_ids``), as Hugging Face's ``generate`` with ``eos_token_id``: a row is
finished once it has produced one of the stop ids; from then on each of its new positions holds
the first stop id (HF pads with ``pad_token_id``, which defaults to the eos id), and generation
ends as soon as every row is finished. So one row comes back as the prompt, the new tokens and
the stop token that ended them, and a batch is as long as its longest row. The check costs one
(B,)-sized device-to-host copy per step, and only when stop ids are given.
"""

import numbers

from .. import backend, parallel
from ..autograd import Tensor, no_grad
from ..checks import check_int, check_number
from ..ops.softcap import softcap_kernel
from .cache import KVCache


def head_logits(hidden, weight):
    """(B, V) logits of the last positions' hidden states: one GEMM on all threads (V is large), or a
    frozen table's banded ``logits`` (quant/table.py), which widens the stored table a band at a time."""
    if isinstance(weight, Tensor):
        return parallel.matmul(hidden, weight.data.T)
    return weight.logits(Tensor(hidden)).data


def check_generate_args(max_new_tokens, temperature, top_k, vocab_size, stop_token_ids=None):
    """Checks every argument; returns the stop ids as a tuple of ints (empty: never stop early)."""
    check_int("max_new_tokens", max_new_tokens, min=0)
    check_number("temperature (0 means greedy)", temperature, min=0)
    if top_k is not None:
        check_int("top_k", top_k, min=1, max=vocab_size)
    if stop_token_ids is None:
        return ()
    ids = (stop_token_ids,) if isinstance(stop_token_ids, numbers.Integral) else stop_token_ids
    if isinstance(ids, (str, bytes)) or not hasattr(ids, "__iter__"):
        raise TypeError(f"stop_token_ids must be a token id or a list of token ids; got {stop_token_ids!r}")
    return tuple(check_int("each of stop_token_ids", i, min=0, max=vocab_size - 1) for i in ids)


def sample_next(logits, temperature=1.0, top_k=None):
    """One token id per row of (B, V) logits: argmax if temperature is 0, else a softmax sample
    of logits/temperature restricted to the top_k largest (on the device, no host round trip). The
    k-th largest comes from a partial sort (``partition``: O(V), not a sort of the whole vocabulary)."""
    xp = backend.xp
    if temperature == 0:
        return logits.argmax(axis=-1)
    logits = logits / logits.dtype.type(temperature)
    if top_k is not None:
        kth = xp.partition(logits, -top_k, axis=-1)[:, -top_k][:, None]
        logits = xp.where(logits < kth, -xp.inf, logits)
    probs = xp.exp(logits - logits.max(axis=-1, keepdims=True))
    cdf = xp.cumsum(probs, axis=-1)
    u = backend.rng().random((logits.shape[0], 1), dtype=cdf.dtype) * cdf[:, -1:]
    return xp.minimum((cdf < u).sum(axis=-1), logits.shape[-1] - 1)


def decode(model, tokens, max_new_tokens, sampling, stop, cache, limit):
    """The sampling loop: (B, T) device ids -> (B, T + n) NumPy ids, n ≤ max_new_tokens (n is
    smaller only when every row met a stop id, see the module docstring). Each step runs the new
    positions through ``model.hidden_states(ids, cache=cache)`` and the last one through the LM
    head; ``limit`` is the model's context: past it the window slides (the cache is emptied and
    the last ``limit`` ids re-encoded)."""
    xp = backend.xp
    was_training = model.training
    model.eval()
    try:
        pieces, window = [tokens], tokens[:, -limit:]
        stop_ids = xp.asarray(stop, dtype=tokens.dtype) if stop else None
        done = xp.zeros(tokens.shape[0], dtype=bool)
        for _ in range(max_new_tokens):
            if cache.length + window.shape[1] > limit:  # slide the window
                cache.reset()
                window = xp.concatenate(pieces, axis=1)[:, -limit:]
            hidden = model.hidden_states(window, cache=cache).data[:, -1]
            logits = head_logits(hidden, model.head_weight)
            if model.logit_softcap is not None:  # Gemma: cap·tanh(logits/cap), in place
                softcap_kernel(logits, logits, float(model.logit_softcap))
            new = sample_next(logits, *sampling).astype(tokens.dtype)
            if stop_ids is not None:
                new = xp.where(done, stop_ids[0], new)  # finished rows pad with the first stop id
                done |= (new[:, None] == stop_ids[None, :]).any(axis=1)
            window = new[:, None]
            pieces.append(window)
            if stop_ids is not None and bool(done.all()):
                break
    finally:
        model.train(was_training)
    return backend.to_numpy(xp.concatenate(pieces, axis=1))


@no_grad()
def generate(model, idx, max_new_tokens, temperature=1.0, top_k=None, stop_token_ids=None):
    """(B, T) token ids -> (B, T + max_new_tokens) NumPy array of token ids, or shorter when every
    row has produced one of ``stop_token_ids`` (module docstring). Any model with ``config.vocab_size``,
    ``context_length``, ``_check_idx``, ``hidden_states(ids, cache=)``, ``head_weight``,
    ``logit_softcap`` (None, or the cap of cap·tanh(logits/cap)) and ``attention_windows``
    ({layer index: window} of its sliding-window layers)."""
    stop = check_generate_args(max_new_tokens, temperature, top_k, model.config.vocab_size, stop_token_ids)
    tokens = backend.xp.asarray(model._check_idx(idx))
    limit = model.context_length
    cache = KVCache(min(limit, tokens.shape[1] + max_new_tokens) or 1, model.attention_windows)
    with parallel.single_threaded_blas():  # entered once here, not once per op of every step
        return decode(model, tokens, max_new_tokens, (temperature, top_k), stop, cache, limit)
