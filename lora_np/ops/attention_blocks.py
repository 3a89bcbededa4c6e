"""What both attention kernels share: which keys a query sees, the blocks of queries and keys they
walk, and the sum of a K/V head's gradient over its query group.

Which keys a query sees. Query row r (0 ≤ r < T_q) and key column j (0 ≤ j < T_k) are aligned
bottom-right, as transformers aligns them under a KV cache: the last query sits at the last key,
so query r is at key index i = r + T_k - T_q. Causal attention lets it see keys j ≤ i; a sliding
window of W (Gemma 3's local layers; transformers' ``sliding_window_causal_mask_function``, which
ands ``kv_idx > q_idx - sliding_window`` with ``kv_idx <= q_idx``) keeps only

    i - W < j ≤ i,    i.e. the W most recent keys, the query's own included (W = 1: itself only).

Only the difference i - j enters, so absolute positions never do: a key buffer that holds only the
last keys of a longer sequence (a KV cache trimmed to the window) needs no offset argument, as long
as it ends at the last query, which a cache that appends the new keys before attending does.

Blocks. Query rows are taken ``rows`` at a time; rows [a, b) may see keys [c, e) only, with
e = b + T_k - T_q (causal) and c = a + T_k - T_q - W + 1 (window), so the all-masked blocks above
the diagonal and left of the window are never computed: O(T·W) work and memory instead of O(T²).
The plain kernels take [c, e) whole; the memory-efficient ones walk it in key blocks, starting at
the diagonal.
"""

from typing import NamedTuple

from .. import backend


class KeyMask(NamedTuple):
    """Query r sees key j iff r + offset - window < j ≤ r + offset; offset None: every key (no mask)."""
    offset: int | None   # T_k - T_q under a causal mask
    window: int | None   # None: no window (every earlier key)

    @classmethod
    def of(cls, t_q, t_k, causal, window=None):
        return cls(t_k - t_q if causal else None, window if causal else None)

    def key_range(self, a, b, t_k):
        """[c, e): the keys that any of the query rows [a, b) may see."""
        if self.offset is None:
            return 0, t_k
        first = 0 if self.window is None else max(0, a + self.offset - self.window + 1)
        return first, min(t_k, b + self.offset)

    def blocks(self, t_q, t_k, rows):
        """[(a, b, c, e)]: query rows [a, b), ``rows`` at a time, and the keys [c, e) they may see."""
        return [(a, min(a + rows, t_q)) + self.key_range(a, min(a + rows, t_q), t_k) for a in range(0, t_q, rows)]

    def add_to(self, s, a, c):
        """S + M in place, for the block ``s`` of query rows [a, a + rows) over keys [c, c + cols):
        -∞ on the keys a row does not see. Row r's own key is column r + diag; the hidden keys are
        the columns right of it (j > r + diag) and, with a window, those at least W left of it
        (j ≤ r + diag - W). Only the columns that hold one are touched, as a triangle written -∞
        (most blocks hold none; in a chunk of the plain kernels the triangle is (rows, rows), not
        (rows, T)). Writing -∞ there equals adding it to finite scores, and costs half as much."""
        if self.offset is None:
            return s
        rows, cols = s.shape[-2:]
        diag = a + self.offset - c
        if diag + 1 < cols:                                    # later keys: j > r + diag
            lo = max(0, diag + 1)
            backend.xp.copyto(s[..., lo:], -backend.xp.inf, where=_hidden(rows, cols - lo, diag + 1 - lo, above=True))
        hi = min(cols, rows + diag - self.window) if self.window is not None else 0
        if hi > 0:                                             # window: j ≤ r + diag - W
            backend.xp.copyto(s[..., :hi], -backend.xp.inf, where=_hidden(rows, hi, diag - self.window, above=False))
        return s


def _hidden(rows, cols, k, above):
    """(rows, cols) booleans: True where column - row ≥ k (``above``) or ≤ k; built per call
    (nothing is cached, so nothing grows with the lengths seen)."""
    xp = backend.xp
    return ~xp.tri(rows, cols, k - 1, dtype=bool) if above else xp.tri(rows, cols, k, dtype=bool)


def key_blocks(c, e, size):
    """[c, e) in blocks of ``size`` keys from the last (the diagonal) back: [(f - size, f), ...]."""
    return [(max(c, f - size), f) for f in range(e, c, -size)]


def check_window(window, causal):
    """None or a positive int, and only with a causal mask; anything else is refused."""
    if window is None:
        return None
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"attention: window must be None or a positive int (the keys a query sees, its own "
                         f"included); got {window!r}")
    if not causal:
        raise ValueError("attention: a sliding window needs causal=True (it bounds the keys before the query)")
    return window


def group_product(left, right):
    """Σ_g left_g right_g over the group axis (-3): (…, G, m, n), (…, G, n, p) -> (…, 1, m, p), as one
    product (…, 1, m, G·n) @ (…, 1, G·n, p) (a K/V head's gradient from its G query heads)."""
    xp = backend.xp
    m, p = left.shape[-2], right.shape[-1]
    left_rows = xp.moveaxis(left, -3, -2).reshape(left.shape[:-3] + (1, m, -1))
    return left_rows @ right.reshape(right.shape[:-3] + (1, -1, p))


def add_product(dst, left, right, first=False):
    """dst = left right (``first``) or dst += left right, summed over the query group when ``dst``
    is a K/V head's gradient shared by G query heads (grouped-query attention)."""
    if left.shape[-3] != dst.shape[-3]:
        product = group_product(left, right)
        if first:
            dst[...] = product
        else:
            dst += product
    elif first:
        backend.xp.matmul(left, right, out=dst)
    else:
        dst += left @ right


def masked_scores(q_i, k_j, mask, a, c, out=None):
    """S = q_i k_jᵀ + M for query rows [a, a + len(q_i)) (q_i already scaled by 1/√d) and keys
    [c, c + len(k_j)), written into ``out`` if given (``KeyMask.add_to`` adds the -∞)."""
    return mask.add_to(backend.xp.matmul(q_i, k_j.swapaxes(-1, -2), out=out), a, c)
