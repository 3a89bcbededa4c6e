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
