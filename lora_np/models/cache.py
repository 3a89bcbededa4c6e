"""The key/value cache of generation: one class for every model family, as transformers' ``Cache``.

Without a cache, every new token would re-run attention over the whole prefix: O(T²) work per
token. With one, each attention layer computes q, k, v for the new positions only, and calls
``keys, values = cache.update(k, v, layer_idx)``: the new keys and values are stored, and the
layer attends over everything the cache returns (``attend``). The layer's forward is the same
one training runs, given ``cache=`` (transformers passes ``past_key_values`` the same way).

Memory is bounded. A full-attention layer holds one (B, H_kv, capacity, d) buffer for keys and one
for values, allocated at the first update, with capacity = min(context, prompt + new tokens) (the
generate loop's choice), never a whole context when fewer positions are needed. A layer given a
sliding ``window`` (Gemma 3's local layers) keeps only its last ``window`` positions: a query at
position i sees keys j with i - window < j ≤ i, so older keys can never be read again.

Positions: ``cache.length`` is how many positions the cache has seen (the position of the next
new token); a model reads it before its first layer, and every layer's update advances its own
count. The causal mask of the new block is aligned bottom-right: query i of a block of T is at
position length + i and sees the returned keys up to its own.
"""

import math

from .. import backend
from ..autograd import is_grad_enabled
from ..checks import check_int
from ..ops.attention import grouped_views, sdpa_forward
from ..ops.softmax import softmax_array


class KVCache:
    """Keys and values of every attention layer of one model, for ``batch`` rows.

    ``capacity``: the most positions a full-attention layer holds; ``windows``: {layer_idx: window}
    for sliding-window layers (a layer not named attends over everything, up to ``capacity``)."""

    def __init__(self, capacity, windows=None):
        self.capacity = check_int("KVCache capacity", capacity, min=1)
        self.windows = {i: check_int(f"KVCache window of layer {i}", w, min=1)
                        for i, w in (windows or {}).items() if w is not None}
        self.layers = {}  # layer_idx -> [keys, values, positions seen]

    @property
    def length(self):
        """Positions seen so far: the first layer's count (every layer sees the same positions)."""
        return min((entry[2] for entry in self.layers.values()), default=0)

    def reset(self):
        """Forget every position (the generate loop re-encodes a sliding context from scratch)."""
        self.layers.clear()

    def update(self, k, v, layer_idx):
        """Store k, v (B, H_kv, T, d) of T new positions; return (keys, values) the new queries attend over:
        every position so far, or, for a window layer, the last window - 1 before the new ones and the new ones."""
        window = self.windows.get(layer_idx)
        if window is not None:
            return self._update_window(k, v, layer_idx, window)
        entry = self.layers.get(layer_idx)
        if entry is None:
            xp, room = backend.xp, (self.capacity,)
            entry = self.layers[layer_idx] = [xp.empty(k.shape[:2] + room + k.shape[3:], dtype=k.dtype),
                                              xp.empty(v.shape[:2] + room + v.shape[3:], dtype=v.dtype), 0]
        keys, values, start = entry
        end = start + k.shape[2]
        if end > self.capacity:
            raise ValueError(f"KVCache: positions up to {end} exceed its capacity of {self.capacity}")
        keys[:, :, start:end], values[:, :, start:end] = k, v
        entry[2] = end
        return keys[:, :, :end], values[:, :, :end]

    def _update_window(self, k, v, layer_idx, window):
        """A sliding-window layer: returns its last window - 1 positions and the new ones (what the new
        queries may see), then keeps only the last ``window`` positions of them (copied: no larger
        array stays alive behind a view)."""
        new = k.shape[2]
        entry = self.layers.get(layer_idx)
        seen = 0 if entry is None else entry[2]
        if entry is not None:
            kept_k, kept_v = entry[0], entry[1]
            first = max(0, kept_k.shape[2] - (window - 1))
            xp = backend.xp
            k = xp.concatenate((kept_k[:, :, first:], k), axis=2)
            v = xp.concatenate((kept_v[:, :, first:], v), axis=2)
        self.layers[layer_idx] = [k[:, :, -window:].copy(), v[:, :, -window:].copy(), seen + new]
        return k, v


def attend(q, keys, values, y=None, window=None):
    """Causal attention of the new queries q (B, H, T, d) over the keys and values a cache returned
    (B, H_kv, T_k, d each, T ≤ T_k), the mask aligned bottom-right: query i is position T_k - T + i;
    with a sliding ``window``, it sees only the keys j with i - window < j ≤ i.
    Grouped-query heads read their shared K/V head without a copy. Returns the (B, H, T, d) output,
    written into ``y`` when given (e.g. a heads view of the merged (B, T, H·d) layout).
    A single new query (a decode step) sees every key the cache returned (a window layer's cache
    returns no more than its window): ``attend_one``, no mask, no blocks."""
    if q.shape[-2] == 1:
        return attend_one(q, keys, values, y)
    qd, kd, vd = grouped_views(q, keys, values)
    out, _, _ = sdpa_forward(qd, kd, vd, causal=True, y=y if qd is q else None, window=window)
    return y if out is y else _into(out.reshape(q.shape[:-1] + values.shape[-1:]), y)


def attend_one(q, keys, values, y=None):
    """``attend`` for one query per row, q (B, H, 1, d): softmax(q kᵀ/√d) v over all T_k keys.
    Grouped-query heads as (B, H_kv, G, 1, d) against (B, H_kv, 1, T_k, d) views."""
    qd, kd, vd = grouped_views(q, keys, values)
    scores = (qd * qd.dtype.type(1.0 / math.sqrt(q.shape[-1]))) @ kd.swapaxes(-1, -2)  # S = (q/√d) kᵀ
    out = softmax_array(scores, out=scores) @ vd                                        # Y = softmax(S) v
    return _into(out.reshape(q.shape[:-1] + values.shape[-1:]), y)


def _into(out, y):
    """``out``, or ``y`` with ``out`` written into it when a buffer was given."""
    if y is None:
        return out
    y[...] = out
    return y


def check_cache_positions(cache, new, limit, name):
    """The position of the first of ``new`` ids: 0 without a cache, else the cache's length. A cache
    is for generation (under no_grad: no gradient flows through the cached keys), and positions
    past the model's context (``name`` = ``limit``) are refused."""
    if cache is None:
        return 0
    if is_grad_enabled():
        raise ValueError("a KVCache is for generation: call the model under lora_np.no_grad()")
    start = cache.length
    if start + new > limit:
        raise ValueError(f"positions up to {start + new} exceed {name}={limit}")
    return start
