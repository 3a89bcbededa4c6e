"""Integer index arrays (token ids, targets): checked where they live, then moved to the device.

Token ids usually come from the host (a data loader), so they are checked there, before the copy
to the GPU, and no device-to-host synchronisation is needed in the training loop.
"""

import numpy as np

from .. import backend
from ..autograd import Tensor


def check_index_range(ids, upper, what, ignore=None):
    """``ids`` (unchanged, lists become arrays) after checking every value is in [0, upper) or ``ignore``.

    Raises TypeError for non-integer data and ValueError naming the first bad value and the range.
    """
    a = ids.data if isinstance(ids, Tensor) else ids
    if isinstance(a, (list, tuple, int, np.integer)):
        a = np.asarray(a)
    if not hasattr(a, "dtype") or a.dtype.kind not in "iu":
        raise TypeError(f"{what} must be integers; got {getattr(a, 'dtype', type(a).__name__)}")
    bad = (a < 0) | (a >= upper)
    if ignore is not None:
        bad &= a != ignore
    if bool(bad.any()):
        also = f" or {ignore} (ignored)" if ignore is not None else ""
        raise ValueError(f"{what}: value {int(a[bad].reshape(-1)[0])} is outside [0, {upper}){also}")
    return a


def as_index_array(ids, upper, what, ignore=None):
    """``check_index_range``, then the ids as an array of the current backend."""
    return backend.xp.asarray(check_index_range(ids, upper, what, ignore))


def check_token_batch(idx, max_length, length_name, vocab_size):
    """A model's input: a 2-D (batch, time) array of token ids with 1 ≤ time ≤ ``max_length``
    (named ``length_name`` in the message) and every id in [0, vocab_size). Returns the array."""
    ids = idx.data if isinstance(idx, Tensor) else idx
    if isinstance(ids, (list, tuple)):
        ids = np.asarray(ids)
    if not hasattr(ids, "ndim") or ids.ndim != 2:
        raise ValueError(f"idx must be a 2-D (batch, time) array of token ids; got "
                         f"{getattr(ids, 'shape', type(ids).__name__)}")
    if ids.shape[1] > max_length or ids.shape[1] == 0:
        raise ValueError(f"sequence length {ids.shape[1]} is outside [1, {length_name}={max_length}]")
    return check_index_range(ids, vocab_size, "token ids")
