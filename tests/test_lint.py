"""The code stays clean under the linter configured in pyproject.toml ([tool.ruff]: line length
120, rules E, F, W). Runs ``ruff check`` on the package, the tests, the benchmarks and the tools;
skips when ruff is not installed (it is in requirements-dev.txt and the ``dev`` extra)."""

import importlib.util
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHECKED = ("lora_np", "tests", "benchmarks", "tools")


def _ruff_command():
    """The command that runs ruff: the ``ruff`` on PATH, else ``python -m ruff``; None without it."""
    exe = shutil.which("ruff")
    if exe:
        return [exe]
    if importlib.util.find_spec("ruff") is not None:
        return [sys.executable, "-m", "ruff"]
    return None


def test_ruff_check_is_clean():
    command = _ruff_command()
    if command is None:
        pytest.skip("ruff is not installed (pip install -r requirements-dev.txt)")
    proc = subprocess.run([*command, "check", *CHECKED], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"ruff check {' '.join(CHECKED)} found problems:\n{proc.stdout}{proc.stderr}"
