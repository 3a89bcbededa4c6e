"""lora_np.checks: the one scalar validator. Oracle: the accepted ranges written out by hand."""

import numpy as np
import pytest

from lora_np.checks import check_int, check_number, check_probability


@pytest.mark.parametrize("value,kwargs,message", [
    (0, dict(min=1), "n must be a positive integer; got 0"),
    (-1, dict(min=0), "n must be a non-negative integer; got -1"),
    (True, dict(min=1), "n must be a positive integer; got True"),
    (2.0, dict(min=1), "n must be a positive integer; got 2.0"),
    ("2", dict(), "n must be an integer; got '2'"),
    (11, dict(min=1, max=10), r"n must be an integer in \[1, 10\]; got 11"),
    (200, dict(min=257), "n must be an integer ≥ 257; got 200"),
])
def test_check_int_rejects(value, kwargs, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        check_int("n", value, **kwargs)


def test_check_int_accepts_numpy_integers_and_returns_python_ints():
    assert check_int("n", np.int64(3), min=1) == 3 and type(check_int("n", np.int64(3))) is int
    assert check_int("n", 10, min=1, max=10) == 10


@pytest.mark.parametrize("value,kwargs,message", [
    (0, dict(min=0, min_open=True), "x must be a positive number; got 0"),
    (-0.5, dict(min=0), "x must be a non-negative number; got -0.5"),
    (float("nan"), dict(), "x must be a number; got nan"),
    (False, dict(), "x must be a number; got False"),
    (1.0, dict(min=0, max=1, max_open=True), r"x must be a number in \[0, 1\); got 1.0"),
])
def test_check_number_rejects(value, kwargs, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        check_number("x", value, **kwargs)


def test_check_number_and_probability_accept():
    assert check_number("x", 3, min=0, min_open=True) == 3.0 and type(check_number("x", 3)) is float
    assert check_number("x", np.float32(0.5), max=1) == 0.5
    assert check_probability("p", 0) == 0.0 and check_probability("p", 0.999) == 0.999
    with pytest.raises(ValueError, match=r"p must be a number in \[0, 1\); got 1"):
        check_probability("p", 1)
