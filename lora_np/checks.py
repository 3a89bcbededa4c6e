"""The one place that checks scalar arguments: integers, numbers in a range, probabilities.

Every public function and config checks its scalars at the boundary with these, so each bad
value gets the same kind of message, naming the argument, what is accepted and what came:

    >>> check_int("n_layer", 0, min=1)
    ValueError: n_layer must be a positive integer; got 0

``bool`` is rejected everywhere (``True`` is an int to Python, never a sensible layer count), and so
is NaN. The error is a ValueError whether the value has the wrong type or is out of range, as a
config file holding "2" for an integer is a bad value, not a programming error.
"""

import math
import numbers


def _describe(kind, min, max, min_open=False, max_open=False):
    """'a positive integer', 'a number in [0, 1)', 'an integer ≥ 257' ..."""
    article = "an" if kind == "integer" else "a"
    if max is None and min == 0:
        return f"a {'positive' if min_open else 'non-negative'} {kind}"
    if max is None and min is not None:
        return f"{article} {kind} {'>' if min_open else '≥'} {min}"
    if min is None and max is not None:
        return f"{article} {kind} {'<' if max_open else '≤'} {max}"
    if min is None:
        return f"{article} {kind}"
    return f"{article} {kind} in {'(' if min_open else '['}{min}, {max}{')' if max_open else ']'}"


def check_int(name, value, min=None, max=None):
    """``value`` as a Python int, after checking it is an integer (not a bool) in [min, max].

    ``min=1`` reads "a positive integer", ``min=0`` "a non-negative integer" in the message.
    """
    if min == 1 and max is None:
        min, min_open = 0, True
    else:
        min_open = False
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if ok:
        ok = (min is None or (value > min if min_open else value >= min)) and (max is None or value <= max)
    if not ok:
        raise ValueError(f"{name} must be {_describe('integer', min, max, min_open)}; got {value!r}")
    return int(value)


def check_number(name, value, min=None, max=None, min_open=False, max_open=False):
    """``value`` as a Python float, after checking it is a real number (not a bool, not NaN) within
    the bounds; ``min_open``/``max_open`` exclude the bound itself (``min=0, min_open=True``: positive)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and not math.isnan(value)
    if ok and min is not None:
        ok = value > min if min_open else value >= min
    if ok and max is not None:
        ok = value < max if max_open else value <= max
    if not ok:
        raise ValueError(f"{name} must be {_describe('number', min, max, min_open, max_open)}; got {value!r}")
    return float(value)


def check_probability(name, value):
    """A dropout-style probability: a number in [0, 1) (1 would drop everything)."""
    return check_number(name, value, min=0, max=1, max_open=True)
