"""Exercises for the notebooks: the learner writes a function, ``check(fn)`` says whether it is right.

THE PATTERN (notebooks 01-05 follow it; copy it for a new notebook):

1. A markdown cell states the task and its math.
2. The stub cell (never edited in the committed notebook; it ends with ``raise NotImplementedError``)::

       def softmax_backward(g, y):
           # YOUR CODE
           raise NotImplementedError

3. A visible check cell: ``check(softmax_backward)``. It prints ``✓ softmax_backward: ...`` when
   the answer is right; for the untouched stub it prints "not written yet" and returns False (so
   "Run All" carries on); for a wrong answer it raises ``ExerciseFailed`` saying what differs.
4. The solution cell, right after, collapsed: cell metadata
   ``{"jupyter": {"source_hidden": true}, "tags": ["solution"]}``. It redefines the function
   (self-contained: only ``np``, ``lora_np``, ``ops``, ``Tensor``, what it imports itself and the
   functions of the notebook's earlier solutions) and ends with ``assert check(softmax_backward)``.
   CI runs the notebooks with the solutions in.

EXERCISE FIRST. No visible cell before a stub gives its answer away: the derivation comes *after*
the check (or in a collapsed "Hint/derivation (expand)" cell, metadata
``{"jupyter": {"source_hidden": true}}``). ``tests/test_exercises.py`` searches the visible cells
before each stub for the key expressions of its solution and fails if it finds one.

A check lives in ``course/exNN_<topic>.py`` (one module per notebook, owned by that notebook's
author; this package imports every ``ex*.py`` module it finds). It is a function decorated with
``@exercise``, named exactly like the learner's function, that takes the learner's function and
returns a one-line summary, raising ``ExerciseFailed`` (use ``compare``) or ``GradcheckError``
when something is wrong. It compares the answer with the engine (lora_np's own op) AND with
central differences (``lora_np.gradcheck`` on ``as_op(forward, backward)``, an op built from the
learner's backward). Its inputs are chosen so that the mistakes learners make show: shapes that are
not square (a transpose cannot pass), logits large enough to overflow an unshifted ``exp``,
multi-character symbols, a float64 parameter. ``tests/test_exercises.py`` lists, for every
exercise, at least three plausible wrong answers (a transpose, a wrong axis, a missing term or
scale, an unstable form, a wrong dtype assumption, a string shortcut) and asserts that the check
rejects each of them and the stub, and accepts the solution.

Checks run on the NumPy backend (``backend.using``) whatever the notebook's backend, so the
learner writes plain ``np`` code on host arrays.
"""

import importlib
import pkgutil

import numpy as np

from lora_np import backend
from lora_np.autograd import Tensor
from lora_np.gradcheck import GradcheckError

CHECKS = {}


class ExerciseFailed(AssertionError):
    """The learner's answer is wrong; the message says where."""


def exercise(fn):
    """Register ``fn`` as the check for the learner's function of the same name."""
    CHECKS[fn.__name__] = fn
    return fn


def check(fn):
    """True when ``fn`` passes its exercise; False (with a hint) while it is still the stub."""
    name = getattr(fn, "__name__", None)
    if name not in CHECKS:
        broken = "".join(f"; course/{m}.py failed to import ({e})" for m, e in IMPORT_ERRORS.items())
        raise KeyError(f"no exercise named {name!r}; exercises: {sorted(CHECKS)}{broken}")
    host_state = backend.host_rng().bit_generator.state  # a check must not move the notebook's generators
    with backend.using(np, "numpy"):
        try:
            summary = CHECKS[name](fn)
        except NotImplementedError:
            print(f"… {name} is not written yet: fill in the cell above (a solution is in the collapsed cell below)")
            return False
        except GradcheckError as exc:
            raise ExerciseFailed(f"{name} disagrees with central differences: {exc}") from None
        except (ValueError, IndexError) as exc:  # numpy's shape errors, in the learner's code
            raise ExerciseFailed(f"{name} raised {type(exc).__name__}: {exc} (check the shapes: a transpose "
                                 f"or a wrong axis?)") from None
        finally:
            backend.host_rng().bit_generator.state = host_state
    print(f"✓ {name}: {summary}")
    return True


def compare(what, got, expected, atol=1e-8, rtol=1e-6):
    """Raise ExerciseFailed unless ``got`` has ``expected``'s shape and values; the message gives the
    relative error and names the mistake when it is a common one (see ``diagnose``)."""
    got = backend.to_numpy(got) if isinstance(got, Tensor) else np.asarray(got)
    expected = backend.to_numpy(expected)
    if got.shape != expected.shape:
        turned = " — the transpose's shape: a transpose?" if got.shape == expected.shape[::-1] else ""
        raise ExerciseFailed(f"{what} has shape {got.shape}; expected {expected.shape}{turned}")
    if not np.allclose(got, expected, atol=atol, rtol=rtol):
        worst = np.unravel_index(np.argmax(np.abs(got - expected)), got.shape) if got.ndim else ()
        raise ExerciseFailed(f"{what} differs from the engine's{diagnose(got, expected)} (relative error "
                             f"{relative_error(got, expected):.1e}; at index {tuple(int(i) for i in worst)} "
                             f"yours is {got[worst]:.6g}, the engine's {expected[worst]:.6g})")


def relative_error(got, expected):
    """max |got - expected| / max |expected|: one number for how far off, whatever the scale."""
    got, expected = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    return float(np.abs(got - expected).max() / max(np.abs(expected).max(), 1e-300))


def _constant_ratio(got, expected):
    """The one number c with got = c · expected everywhere, or None."""
    big = np.abs(expected) > 1e-9 * np.abs(expected).max()
    if not big.any() or not np.all(np.isfinite(got)) or np.abs(got[~big]).max(initial=0) > 1e-9 * np.abs(got).max():
        return None
    ratio = float(np.median(got[big] / expected[big]))
    return ratio if ratio != 0 and np.allclose(got, ratio * expected, rtol=1e-6, atol=1e-12) else None


def _name_ratio(c):
    for n in range(2, 65):
        if np.isclose(c, 1 / n, rtol=1e-6):
            return f"1/{n} of the engine's everywhere — a mean where a sum belongs, or a factor 1/{n} too many?"
        if np.isclose(c, n, rtol=1e-6):
            return f"{n}× the engine's everywhere — a sum where a mean belongs, or a factor {n} too many?"
    return f"{c:.4g}× the engine's everywhere — a scale factor missing or extra?"


def diagnose(got, expected):
    """': <the likely mistake>' when ``got`` is ``expected`` turned by a common slip, else ''."""
    got, expected = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    if got.shape != expected.shape or not np.abs(expected).max(initial=0) > 0 or not np.all(np.isfinite(got)):
        return "" if np.all(np.isfinite(got)) else ": yours holds inf or nan: an overflow (exp of a large number?)"
    rel = relative_error(got, expected)
    if rel < 1e-3:
        return f": it agrees to {rel:.0e} only, a near miss — an eps missing (or added twice), or a constant rounded?"
    if np.allclose(got, -expected, rtol=1e-6, atol=1e-12):
        return ": exactly the negative of the engine's — a sign flipped?"
    if got.ndim >= 2 and got.shape[-1] == got.shape[-2] and \
            np.allclose(got, np.swapaxes(expected, -1, -2), rtol=1e-6, atol=1e-12):
        return ": the transpose of the engine's — a transpose, or the factors of a product swapped?"
    ratio = _constant_ratio(got, expected)
    if ratio is not None:
        return ": " + _name_ratio(ratio)
    return ""


def cmp(what, got, expected, atol=1e-9):
    """makemore's ``cmp``: one line per intermediate gradient, exact or close or wrong. Returns
    whether it is close; ``compare`` raises instead."""
    got = np.asarray(got, dtype=np.float64) if not isinstance(got, Tensor) else backend.to_numpy(got)
    expected = backend.to_numpy(expected)
    same_shape = got.shape == expected.shape
    exact = same_shape and bool(np.array_equal(got, expected))
    close = same_shape and bool(np.allclose(got, expected, atol=atol, rtol=1e-6))
    diff = float(np.abs(got - expected).max()) if same_shape else float("nan")
    shape = "" if same_shape else f" (shape {got.shape}, expected {expected.shape})"
    print(f"{what:18s} | exact: {str(exact):5s} | close: {str(close):5s} | max diff: {diff:.1e}{shape}")
    return close


def as_op(forward, backward):
    """A Tensor op from plain array functions: ``y = forward(*arrays)``, and
    ``backward(g, *arrays)`` returning one gradient per input (a tuple, or one array for one
    input). ``lora_np.gradcheck`` on it compares that backward with central differences."""
    def op(*tensors):
        arrays = [t.data for t in tensors]

        def grads(g):
            out = backward(g, *arrays)
            return out if isinstance(out, tuple) else (out,)

        return Tensor._from_op(forward(*arrays), tensors, grads)
    return op


def leaf(array):
    """A float64 leaf tensor that requires grad (gradcheck's inputs)."""
    return Tensor(np.array(array, dtype=np.float64), requires_grad=True)


def random(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


IMPORT_ERRORS = {}  # a module being written elsewhere must not stop the other notebooks' checks
for _module in pkgutil.iter_modules(__path__):
    if _module.name.startswith("ex"):
        try:
            importlib.import_module(f"{__name__}.{_module.name}")
        except Exception as exc:  # reported by check() and failed by tests/test_exercises.py
            IMPORT_ERRORS[_module.name] = f"{type(exc).__name__}: {exc}"
