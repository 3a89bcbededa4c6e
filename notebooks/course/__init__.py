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
    """Raise ExerciseFailed unless ``got`` has ``expected``'s shape and values."""
    got = backend.to_numpy(got) if isinstance(got, Tensor) else np.asarray(got)
    expected = backend.to_numpy(expected)
    if got.shape != expected.shape:
        raise ExerciseFailed(f"{what} has shape {got.shape}; expected {expected.shape}")
    if not np.allclose(got, expected, atol=atol, rtol=rtol):
        worst = np.unravel_index(np.argmax(np.abs(got - expected)), got.shape) if got.ndim else ()
        raise ExerciseFailed(f"{what} differs from the engine's: at index {tuple(int(i) for i in worst)} "
                             f"yours is {got[worst]:.6g}, the engine's {expected[worst]:.6g}")


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
