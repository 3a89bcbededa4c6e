"""Autoregressive generation with a key/value cache, all of it here (model.py knows nothing of it).

Without a cache, every new token would re-run attention over the whole prefix: O(T²) work per
token. The cache keeps each layer's keys and values, so a new token computes its own q, k, v,
appends k and v, and attends over the cached ones: O(T) per token. To do that, generation runs
the model's blocks itself (``cached_hidden_states``): the same layers in the same order as
``Block.forward``, with the attention core reading from the cache. When the context outgrows
block_size, the window slides (the last block_size tokens are re-encoded), as in nanoGPT.
Sampling happens on the device; tokens come back to the host once, at the end.

Stopping (``stop_token_ids``), as Hugging Face's ``generate`` with ``eos_token_id``: a row is
finished once it has produced one of the stop ids; from then on each of its new positions holds
the first stop id (HF pads with ``pad_token_id``, which defaults to the eos id), and generation
ends as soon as every row is finished. So one row comes back as the prompt, the new tokens and
the stop token that ended them, and a batch is as long as its longest row. The check costs one
(B,)-sized device-to-host copy per step, and only when stop ids are given.

``decode`` is the loop both model families share (the Llama family's generate in llama.py
passes its own cache and its own ``next_logits``).
"""

import numbers

from . import backend
from .autograd import Tensor, no_grad
from .checks import check_int, check_number
from .ops.attention import heads_view, sdpa_forward, split_heads


class LayerKVCache:
    """Keys and values of one attention layer: two (B, H, block_size, d) buffers."""

    def __init__(self, owner, batch, n_head, head_dim, block_size, dtype):
        xp = backend.xp
        self.owner = owner
        self.k = xp.empty((batch, n_head, block_size, head_dim), dtype=dtype)
        self.v = xp.empty_like(self.k)

    def attend(self, qkv, n_head):
        """Append this step's keys/values, attend over everything cached: (B, T, 3C) -> (B, T, C)."""
        q, k, v = split_heads(qkv, n_head)
        start, end = self.owner.length, self.owner.length + q.shape[2]
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        y = backend.xp.empty((qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3), dtype=qkv.dtype)
        sdpa_forward(q, self.k[:, :, :end], self.v[:, :, :end], causal=True, y=heads_view(y, n_head))
        return y


class KVCache:
    """One LayerKVCache per block and the number of positions filled so far."""

    def __init__(self, model, batch):
        c = model.config
        self.length = 0
        self.layers = [LayerKVCache(self, batch, c.n_head, c.n_embd // c.n_head, c.block_size, model.dtype)
                       for _ in range(c.n_layer)]


def cached_block(block, x, layer_cache):
    """``Block.forward`` (eval mode: dropout is the identity) with attention over the cached keys."""
    attn = block.attn
    y = layer_cache.attend(attn.c_attn(block.ln_1(x)).data, attn.n_head)
    x = x + attn.c_proj(Tensor(y))
    return x + block.mlp(block.ln_2(x))


def cached_hidden_states(model, ids, cache):
    """``GPT.hidden_states`` for ids (B, T) whose positions continue after the cache's length."""
    start, end = cache.length, cache.length + ids.shape[1]
    if end > model.config.block_size:
        raise ValueError(f"positions up to {end} exceed block_size={model.config.block_size}")
    tr = model.transformer
    x = tr.wte(ids) + tr.wpe.weight[start:end]
    for block, layer_cache in zip(tr.h, cache.layers):
        x = cached_block(block, x, layer_cache)
    cache.length = end
    return tr.ln_f(x)


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
    of logits/temperature restricted to the top_k largest (on the device, no host round trip)."""
    xp = backend.xp
    if temperature == 0:
        return logits.argmax(axis=-1)
    logits = logits / logits.dtype.type(temperature)
    if top_k is not None:
        kth = xp.sort(logits, axis=-1)[:, -top_k][:, None]
        logits = xp.where(logits < kth, -xp.inf, logits)
    probs = xp.exp(logits - logits.max(axis=-1, keepdims=True))
    cdf = xp.cumsum(probs, axis=-1)
    u = backend.rng().random((logits.shape[0], 1), dtype=cdf.dtype) * cdf[:, -1:]
    return xp.minimum((cdf < u).sum(axis=-1), logits.shape[-1] - 1)


def decode(model, tokens, max_new_tokens, sampling, stop, cache, limit, next_logits):
    """The sampling loop: (B, T) device ids -> (B, T + n) NumPy ids, n ≤ max_new_tokens (n is
    smaller only when every row met a stop id, see the module docstring). ``next_logits(window,
    cache)`` runs the new positions through the model and returns the last one's (B, V) logits;
    ``limit`` is the cache's reach: past it the window slides (the last ``limit`` ids re-encoded)."""
    xp = backend.xp
    was_training = model.training
    model.eval()
    try:
        pieces, window = [tokens], tokens[:, -limit:]
        stop_ids = xp.asarray(stop, dtype=tokens.dtype) if stop else None
        done = xp.zeros(tokens.shape[0], dtype=bool)
        for _ in range(max_new_tokens):
            if cache.length + window.shape[1] > limit:  # slide the window
                cache.length = 0
                window = xp.concatenate(pieces, axis=1)[:, -limit:]
            new = sample_next(next_logits(window, cache), *sampling).astype(tokens.dtype)
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
    row has produced one of ``stop_token_ids`` (module docstring)."""
    config = model.config
    stop = check_generate_args(max_new_tokens, temperature, top_k, config.vocab_size, stop_token_ids)
    tokens = backend.xp.asarray(model._check_idx(idx))
    wte = model.transformer.wte.weight

    def next_logits(window, cache):
        return cached_hidden_states(model, window, cache).data[:, -1] @ wte.data.T

    return decode(model, tokens, max_new_tokens, (temperature, top_k), stop, KVCache(model, tokens.shape[0]),
                  config.block_size, next_logits)
