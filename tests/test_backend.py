"""The array-module switch: names, errors, seeding, host copies, scatter helpers, and the rule
that no module but backend.py touches cupy."""

import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

import lora_np
from lora_np import Tensor, backend, to_numpy
from device_standin import DeviceArray, standin

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("bad", ["cuda", "torch", "", "NUMPYY", 3, None])
def test_unknown_backend_names_both_accepted_ones(bad):
    with pytest.raises(ValueError, match="'numpy', 'cupy'"):
        lora_np.set_backend(bad)


def test_backend_name_round_trip(backend_name):
    assert lora_np.get_backend() == backend_name
    lora_np.set_backend(" NumPy ")
    assert lora_np.get_backend() == "numpy" and backend.xp is np


@pytest.mark.skipif(backend.cupy_available(), reason="CuPy and CUDA are present here")
def test_cupy_without_gpu_says_what_to_install():
    with pytest.raises(backend.BackendUnavailableError, match="requirements-gpu.txt"):
        lora_np.set_backend("cupy")
    assert lora_np.get_backend() == "numpy"  # unchanged


def _run(code, **env):
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ, **env),
                          capture_output=True, text=True)


USE_IT = """
import lora_np
from lora_np import backend
print("imported")
for use in (backend.check_environment, lambda: lora_np.Tensor([1.0, 2.0]), lambda: lora_np.manual_seed(0)):
    try:
        use()
        print("ran")
    except Exception as exc:
        print(type(exc).__name__ + ": " + str(exc))
"""


def test_environment_variable_is_read_at_import():
    proc = _run("import lora_np; print(lora_np.get_backend())", LORA_NP_BACKEND="numpy")
    assert proc.returncode == 0 and proc.stdout.strip() == "numpy"


def test_unknown_backend_in_the_environment_fails_at_first_use_not_at_import():
    proc = _run(USE_IT, LORA_NP_BACKEND="cuda")
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0 and proc.stderr == "" and lines[0] == "imported"
    assert lines[1:] == ["ValueError: LORA_NP_BACKEND=cuda: unknown backend 'cuda'; accepted: 'numpy', 'cupy'"] * 3


@pytest.mark.skipif(backend.cupy_available(), reason="CuPy and CUDA are present here")
def test_cupy_in_the_environment_without_a_gpu_never_falls_back_to_numpy():
    proc = _run(USE_IT + "\nlora_np.set_backend('numpy'); print(lora_np.get_backend())", LORA_NP_BACKEND="cupy")
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0 and lines[0] == "imported" and lines[-1] == "numpy"  # an explicit switch clears it
    for line in lines[1:4]:
        assert line.startswith("BackendUnavailableError: LORA_NP_BACKEND=cupy: ") and "requirements-gpu.txt" in line
        assert line.count(". ") <= 1  # one sentence and the install hint


def test_manual_seed_repeats_both_generators():
    lora_np.manual_seed(42)
    a = backend.host_rng().standard_normal(5), to_numpy(backend.rng().random(5))
    lora_np.manual_seed(42)
    b = backend.host_rng().standard_normal(5), to_numpy(backend.rng().random(5))
    lora_np.manual_seed(43)
    c = backend.host_rng().standard_normal(5)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c)
    with pytest.raises(ValueError, match="non-negative integer"):
        lora_np.manual_seed(-1)


def test_rng_state_round_trip():
    lora_np.manual_seed(5)
    backend.host_rng().random(3)
    state = backend.get_rng_state()
    first = backend.host_rng().random(4)
    backend.set_rng_state(state)
    np.testing.assert_array_equal(backend.host_rng().random(4), first)


def test_set_backend_reseeds_both_generators_with_the_last_seed():
    lora_np.manual_seed(7)
    first = backend.host_rng().random(3), to_numpy(backend.rng().random(3))
    backend.host_rng().random(5)
    lora_np.set_backend("numpy")
    again = backend.host_rng().random(3), to_numpy(backend.rng().random(3))
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])


def test_using_gives_a_fresh_device_generator_and_restores_the_old_one():
    lora_np.manual_seed(3)
    backend.rng().random(2)
    state = backend.rng().bit_generator.state
    with backend.using(standin, "standin"):
        assert isinstance(backend.rng().random(4), DeviceArray)
        assert "device" not in backend.get_rng_state()  # only NumPy's generator state is a dict
    assert backend.xp is np and backend.get_backend() == "numpy"
    assert backend.rng().bit_generator.state == state


def test_the_generators_module_needs_nothing_from_backend():
    source = (ROOT / "lora_np" / "generators.py").read_text()
    assert not re.search(r"^\s*(from|import)\s+(\.|lora_np\.)backend", source, re.M)
    assert not re.search(r"^from \. import .*backend", source, re.M)


def test_to_numpy_gives_host_copies():
    arr = backend.xp.arange(4.0)
    for x in (arr, Tensor(arr), [0.0, 1.0, 2.0, 3.0]):
        host = to_numpy(x)
        assert type(host) is np.ndarray
        np.testing.assert_array_equal(host, [0, 1, 2, 3])
    host = to_numpy(arr)
    host[0] = 9
    assert to_numpy(arr)[0] == 0


def test_index_add_sums_duplicates():
    target = backend.xp.zeros(4)
    backend.index_add(target, (backend.asarray([1, 1, 3]),), backend.asarray([1.0, 2.0, 5.0]))
    np.testing.assert_array_equal(to_numpy(target), [0, 3, 0, 5])


def test_only_backend_py_mentions_cupy():
    """The one seam: a static check that no other module imports cupy (or cupyx)."""
    offenders = []
    for path in (ROOT / "lora_np").rglob("*.py"):
        if path.name == "backend.py":
            continue
        for line in path.read_text().splitlines():
            if re.match(r"\s*(import|from)\s+cupy", line):
                offenders.append(f"{path.relative_to(ROOT)}: {line.strip()}")
    assert offenders == []
