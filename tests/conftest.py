"""Every test runs once per backend: numpy always, cupy where CUDA is present (skipped otherwise).

``LORA_NP_BACKEND=cupy python -m pytest`` runs the cupy cases only (and fails loudly at import if
CuPy or CUDA is missing, as the library does).
"""

import os
from collections import Counter

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One BLAS/OpenMP thread per worker (-n 2 on two cores), set before NumPy or torch loads their pools; the
    # subprocesses that tests start (the CLI, notebook kernels, mpiexec) inherit it. A setting made by the
    # person running the tests wins.
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import numpy as np
import pytest

import lora_np
from lora_np import backend

CUPY_SKIP_REASON = "cupy backend unavailable: needs an NVIDIA GPU and `pip install -r requirements-gpu.txt`"


def _backend_params():
    requested = os.environ.get("LORA_NP_BACKEND", "").strip().lower()
    names = [requested] if requested else ["numpy", "cupy"]
    params = []
    for name in names:
        marks = [] if name == "numpy" or backend.cupy_available() else [pytest.mark.skip(reason=CUPY_SKIP_REASON)]
        params.append(pytest.param(name, marks=marks, id=name))
    return params


@pytest.fixture(autouse=True, params=_backend_params())
def backend_name(request):
    """The backend under test, set before and restored after each test, with seed 0."""
    saved = backend.get_backend()
    backend.set_backend(request.param)
    lora_np.manual_seed(0)
    yield request.param
    backend.set_backend(saved)


@pytest.fixture
def rng():
    """A host NumPy generator for test data (moved to the backend by Tensor())."""
    return np.random.default_rng(1234)


def pytest_terminal_summary(terminalreporter):
    """One line per skip reason with its count ("404 skipped: cupy backend unavailable: ..."), so
    a run that skips the CuPy copies of every test says why, once."""
    reasons = Counter()
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
        reasons[reason.removeprefix("Skipped: ")] += 1
    if reasons:
        terminalreporter.section("skip reasons", sep="-")
        for reason, count in reasons.most_common():
            terminalreporter.write_line(f"{count} skipped: {reason}")
