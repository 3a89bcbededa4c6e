"""Every exercise in the notebooks can fail: its check rejects the notebook's stub and a plausible
wrong answer (the check's ``mutate`` of the solution), and accepts the notebook's collapsed
solution. An exercise is a solution cell (tagged "solution", source hidden) defining a function
that has a check in notebooks/course/, with a stub cell (``# YOUR CODE``) defining the same name."""

import ast
import math
import sys
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest

import lora_np
from lora_np import Tensor, ops

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
sys.path.insert(0, str(NOTEBOOK_DIR))
import course  # noqa: E402  (notebooks/course, the notebooks' exercise checks)


def _defined_functions(source):
    try:
        tree = ast.parse(source)
    except SyntaxError:  # a cell with IPython magics holds no exercise
        return []
    return [node.name for node in tree.body if isinstance(node, ast.FunctionDef)]


def _exercises():
    found = []
    for path in sorted(NOTEBOOK_DIR.glob("*.ipynb")):
        stubs = {}
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type != "code":
                continue
            names = _defined_functions(cell.source)
            if "# YOUR CODE" in cell.source:
                stubs.update((name, cell.source) for name in names)
            elif "solution" in cell.metadata.get("tags", []):
                found += [(path.stem, name, stubs.get(name), cell) for name in names if name in course.CHECKS]
    return found


EXERCISES = _exercises()


def _define(source, name):
    namespace = {"np": np, "math": math, "time": time, "lora_np": lora_np, "ops": ops, "Tensor": Tensor,
                 "check": course.check}
    exec(compile(source, f"<{name}>", "exec"), namespace)
    return namespace[name]


def test_every_check_module_imports():
    assert not course.IMPORT_ERRORS


def test_at_least_twelve_exercises_two_in_each_of_01_to_04():
    per_notebook = {}
    for notebook, name, _, _ in EXERCISES:
        per_notebook.setdefault(notebook[:2], []).append(name)
    assert len(EXERCISES) >= 12, per_notebook
    assert all(len(per_notebook.get(n, [])) >= 2 for n in ("01", "02", "03", "04")), per_notebook


@pytest.mark.parametrize("notebook, name, stub, solution", EXERCISES, ids=[f"{e[0][:2]}-{e[1]}" for e in EXERCISES])
def test_check_fails_on_stub_and_mutant_and_passes_on_solution(notebook, name, stub, solution, capsys):
    assert stub is not None, f"{notebook}: no stub cell (with '# YOUR CODE') defines {name}"
    assert "raise NotImplementedError" in stub
    assert solution.metadata.get("jupyter", {}).get("source_hidden"), f"{notebook}: {name}'s solution is not collapsed"
    assert course.check(_define(stub, name)) is False
    assert "not written yet" in capsys.readouterr().out
    right = _define(solution.source, name)
    assert course.check(right) is True
    with pytest.raises(course.ExerciseFailed):
        course.check(course.CHECKS[name].mutate(right))
