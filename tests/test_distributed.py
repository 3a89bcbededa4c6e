"""Data-parallel training over MPI (lora_np.distributed).

Oracles: one process on the whole global batch. Gradients (tests/distributed_checks.py, run under
``mpiexec -n 2``): each rank computes the whole batch's gradient itself and compares it with the
sharded, allreduced one. Training: the adapter a 2-rank run saves equals the one a single process
saves on the same global batches, to float32 rounding (dropout off). Files: audit hooks record
every write each rank makes under --out. The MPI tests skip, saying why, where mpiexec or mpi4py
is missing.
"""

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from lora_np import distributed

ROOT = Path(__file__).resolve().parents[1]
CHECKS = ROOT / "tests" / "distributed_checks.py"
MPIEXEC = shutil.which("mpiexec") or shutil.which("mpiexec", path=str(Path(sys.executable).parent))
MPI_MISSING = ("mpiexec not found" if MPIEXEC is None else
               "mpi4py not installed" if importlib.util.find_spec("mpi4py") is None else None)
needs_mpi = pytest.mark.skipif(MPI_MISSING is not None,
                               reason=f"{MPI_MISSING}: pip install -r requirements-distributed.txt")
HIDE_MPI4PY = "import sys; sys.modules['mpi4py'] = None; "  # any `import mpi4py` now raises ImportError


@pytest.fixture(autouse=True)
def numpy_only(backend_name):
    if backend_name != "numpy":
        pytest.skip("the ranks run in subprocesses on the numpy backend (the device path: the stand-in check)")


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in distributed.LAUNCHER_SIZE_VARIABLES}
    return dict(env, PYTHONPATH=str(ROOT), LORA_NP_NUM_THREADS="1", MPLBACKEND="Agg", **extra)


def run(*command, ranks=None, timeout=120, env=None):
    prefix = [MPIEXEC, "-n", str(ranks)] if ranks else []
    return subprocess.run([*prefix, *map(str, command)], cwd=ROOT, env=env or _env(), capture_output=True,
                          text=True, timeout=timeout)


def test_launched_ranks_read_from_the_launchers_variables():
    assert distributed.launched_ranks({}) == 1
    assert distributed.launched_ranks({"PMI_SIZE": "2", "MPI_LOCALNRANKS": "2"}) == 2
    assert distributed.launched_ranks({"OMPI_COMM_WORLD_SIZE": "4"}) == 4
    assert distributed.launched_ranks({"PMI_SIZE": " ", "MV2_COMM_WORLD_SIZE": "x"}) == 1


def test_one_process_is_world_of_one():
    """Without init (or outside mpiexec): rank 0 of 1, the whole batch, gradients left as they are."""
    assert (distributed.world_size(), distributed.rank(), distributed.is_main()) == (1, 0, True)
    x, y = np.arange(10).reshape(5, 2), np.arange(5)
    shard_x, shard_y = distributed.shard_batch(x, y)
    np.testing.assert_array_equal(shard_x, x)
    np.testing.assert_array_equal(shard_y, y)
    assert distributed.local_batch_size(5) == 5

    class P:
        data, grad = np.ones(3, np.float32), np.full(3, 0.1, np.float32)
    p = P()
    g = p.grad
    assert distributed.allreduce_gradients([p], weight=7, values=[2.5]) == (7.0, [2.5])
    assert p.grad is g and np.array_equal(g, np.full(3, 0.1, np.float32))


def test_import_lora_np_does_not_import_mpi4py():
    proc = run(sys.executable, "-c", "import sys, lora_np, lora_np.distributed; "
                                     "print('mpi4py' in sys.modules, lora_np.distributed.init())")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "1"]


@needs_mpi
def test_sharded_gradients_equal_the_whole_batch_on_two_ranks():
    """gradients: weighted by counted targets = one process (and the plain mean is shown wrong);
    device: the same on the stand-in device module, host-staged and CUDA-aware; settings: a rank
    with other arguments or weights is named; stop: a stop request on one rank reaches both;
    streams: each rank its own dropout stream, rank 0's the one process's, resumed exactly."""
    proc = run(sys.executable, CHECKS, "gradients", "device", "settings", "stop", "streams", ranks=2)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    oks = set(re.findall(r"rank (\d) ok (\w+)", proc.stdout))  # the ranks' lines may interleave
    assert oks == {(r, name) for r in "01" for name in ("gradients", "device", "settings", "stop", "streams")}, \
        proc.stdout
    assert "arguments of rank 1; weights of rank 1 differ from rank 0's" in proc.stdout


@needs_mpi
def test_train_on_two_ranks_equals_one_process_and_only_rank_0_writes(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    single = run(sys.executable, CHECKS, "train", one)
    assert single.returncode == 0, single.stderr
    proc = run(sys.executable, CHECKS, "train", two, ranks=2)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    writes = dict(re.findall(r"rank (\d) ok train: (\d+) writes", proc.stdout))
    assert writes["1"] == "0" and int(writes["0"]) > 0, proc.stdout
    want, got = load_file(one / "adapter_model.safetensors"), load_file(two / "adapter_model.safetensors")
    assert sorted(want) == sorted(got)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6, err_msg=name)
    logs = [[json.loads(line) for line in (d / "log.jsonl").read_text().splitlines()] for d in (one, two)]
    assert [r["step"] for r in logs[0]] == [r["step"] for r in logs[1]]  # each line once, not once per rank
    for a, b in zip(*logs):
        for key in set(a) & {"loss", "val_loss"}:
            assert abs(a[key] - b[key]) < 1e-5 * abs(a[key]), (a, b)


@needs_mpi
def test_a_rank_that_fails_stops_every_rank_and_the_last_checkpoint_stays(tmp_path):
    out = tmp_path / "run"
    proc = run(sys.executable, CHECKS, "die", out, ranks=2, timeout=60)
    assert proc.returncode != 0
    assert "rank 1 of 2 failed (OSError: rank 1 lost its data file); stopping every rank" in proc.stderr, proc.stderr
    latest = json.loads((out / "checkpoints" / "latest.json").read_text())
    assert latest["step"] >= 2 and (out / "checkpoints" / latest["dir"] / "state.json").is_file()


@needs_mpi
def test_with_a_timeout_a_rank_that_hangs_stops_the_job():
    """LORA_NP_MPI_TIMEOUT=1: rank 0 waits a second for rank 1 (asleep for a minute), says so and
    aborts the job; without the timeout it would wait for the minute."""
    start = time.monotonic()
    proc = run(sys.executable, CHECKS, "hang", ranks=2, env=_env(LORA_NP_MPI_TIMEOUT="1"), timeout=50)
    assert proc.returncode != 0 and time.monotonic() - start < 45
    assert "rank 0 of 2 waited 1 s (LORA_NP_MPI_TIMEOUT)" in proc.stderr, proc.stderr


# The command line on two ranks ------------------------------------------------------------------

FINETUNE = ["finetune", "--task", "shift", "--lora-dropout", "0", "--quiet"]
FINETUNE_RUN = ["--steps", "200", "--batch-size", "8", "--eval-every", "20"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    out = tmp_path_factory.mktemp("distributed") / "base"
    proc = run(sys.executable, "-m", "lora_np", "pretrain", "--task", "copy", "--out", out, "--steps", "2",
               "--eval-every", "2", "--quiet", "--n-layer", "1", "--n-head", "2", "--n-embd", "16",
               "--block-size", "16", "--batch-size", "8")
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def one_process(base, tmp_path_factory):
    """The oracle: one process, FINETUNE_RUN's global batches."""
    out = tmp_path_factory.mktemp("distributed") / "one"
    proc = run(sys.executable, "-m", "lora_np", *FINETUNE, "--base", base, *FINETUNE_RUN, "--out", out)
    assert proc.returncode == 0, proc.stderr
    return out


def _adapters_match(one, two):
    want, got = load_file(one / "adapter_model.safetensors"), load_file(two / "adapter_model.safetensors")
    assert sorted(want) == sorted(got)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6, err_msg=name)


@needs_mpi
def test_cli_finetune_on_two_ranks_equals_one_process(base, one_process, tmp_path):
    """`mpiexec -n 2 python -m lora_np finetune --data-parallel` = one process on the same global
    batches; rank 1 writes nothing (audit hooks), run_config.json records world_size 2."""
    one, two = one_process, tmp_path / "two"
    args = [*FINETUNE, "--base", base, *FINETUNE_RUN]
    proc = run(sys.executable, CHECKS, "cli", two, *args, "--out", two, "--data-parallel", ranks=2)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    writes = dict(re.findall(r"rank (\d) ok cli: (\d+) writes", proc.stdout))
    assert writes["1"] == "0" and int(writes["0"]) > 0, proc.stdout
    _adapters_match(one, two)
    assert json.loads((two / "run_config.json").read_text())["world_size"] == 2
    assert json.loads((one / "run_config.json").read_text())["world_size"] == 1


@needs_mpi
def test_cli_ctrl_c_on_two_ranks_then_resume_equals_one_uninterrupted_process(base, one_process, tmp_path):
    """Ctrl-C reaches both ranks between different steps; they stop after the same one, rank 0 saves
    and says so once (exit 130); --resume on two ranks finishes the same adapter as one process."""
    two = tmp_path / "two"
    args = [*FINETUNE, "--base", base, *FINETUNE_RUN]
    proc = subprocess.Popen([MPIEXEC, "-n", "2", sys.executable, "-m", "lora_np", *map(str, args), "--out", str(two)],
                            cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    latest = two / "checkpoints" / "latest.json"
    deadline = time.time() + 60
    while time.time() < deadline and not latest.exists():
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.count("interrupted at step") == 1 and "--resume" in err, err
    stopped = json.loads(latest.read_text())["step"]
    assert 20 <= stopped < 200, stopped
    resumed = run(MPIEXEC, "-n", "2", sys.executable, "-m", "lora_np", "finetune", "--out", two, "--resume", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    _adapters_match(one_process, two)


@needs_mpi
@pytest.mark.parametrize("case", ["indivisible", "mismatched"])
def test_cli_refuses_before_any_work_with_one_line(base, tmp_path, case):
    """A global batch that does not split over the ranks, or ranks started with different
    arguments (MPMD: `mpiexec -n 1 A : -n 1 B`): exit 2, one line, --out never created."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "lora_np", *FINETUNE, "--base", base, "--steps", "2", "--out", out]
    if case == "indivisible":
        proc = run(*command, "--batch-size", "5", ranks=2)
        expected = "must be a multiple of 2; got 5"
    else:
        proc = run(MPIEXEC, "-n", "1", *command, "--batch-size", "8", ":", "-n", "1", *command, "--batch-size", "8",
                   "--lr", "0.01")
        expected = "arguments of rank 1 differ from rank 0's"
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0] and lines[0].startswith("python -m lora_np finetune: error:"), lines
    assert not out.exists()


def test_without_mpi4py_a_data_parallel_run_names_the_install(base, tmp_path):
    """--data-parallel, init(required=True), or a launch of several ranks (PMI_SIZE=2) without
    mpi4py: one error naming the install; the command line writes nothing and exits 2."""
    out = tmp_path / "run"
    argv = [*map(str, FINETUNE), "--base", str(base), "--out", str(out), "--data-parallel"]
    script = HIDE_MPI4PY + ("from lora_np import distributed\n"
                            "for kwargs in ({'required': True}, {}):\n"
                            "    try:\n"
                            "        distributed.init(**kwargs)\n"
                            "    except distributed.MPIUnavailableError as exc:\n"
                            "        print(exc)\n"
                            "from lora_np.app.cli import main\n"
                            f"sys.exit(main({argv!r}, prog='python -m lora_np'))\n")
    proc = run(sys.executable, "-c", script, env=_env(PMI_SIZE="2"))
    assert proc.returncode == 2
    printed = proc.stdout.splitlines()
    assert len(printed) == 2 and all(distributed.INSTALL_HINT in line for line in printed), printed
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install -r requirements-distributed.txt" in lines[0], lines
    assert not out.exists()


@needs_mpi
def test_data_parallel_in_one_process_is_refused(base, tmp_path):
    """--data-parallel without mpiexec (mpi4py installed, one rank) would train alone and record
    data_parallel: true, world_size: 1: refused with one line naming mpiexec, nothing written."""
    out = tmp_path / "run"
    proc = run(sys.executable, "-m", "lora_np", *map(str, FINETUNE), "--base", str(base), "--out", str(out),
               "--data-parallel")
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "needs several ranks" in lines[0] and "mpiexec -n 2 python -m lora_np finetune" in lines[0], lines
    assert not out.exists()


def _node_copy(base, node, case):
    """``base`` copied to ``node``/base: as it is, truncated (a copy cut short on that node), or with
    other weights (one value of one tensor moved: a strided sample must still see it)."""
    shutil.copytree(base, node / "base")
    weights = node / "base" / "model.safetensors"
    if case == "truncated":
        weights.write_bytes(weights.read_bytes()[:-64])
    elif case == "other_weights":
        tensors = load_file(weights)
        name = sorted(tensors)[0]
        tensors[name].reshape(-1)[0] += 0.5
        save_file(tensors, weights)


def _files(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@needs_mpi
@pytest.mark.parametrize("case", ["truncated", "other_weights"])
def test_ranks_agree_before_out_is_touched(base, tmp_path, case):
    """Issue 38 items 2 and 3: the same relative --base holds, on rank 1's node (its working
    directory), a truncated file or other weights. Every rank loads, then one collective: exit 2,
    one line naming rank 1, an earlier run in --out (with --overwrite) left byte for byte as it
    was, and a new --out never created."""
    _node_copy(base, tmp_path / "node0", None)
    _node_copy(base, tmp_path / "node1", case)
    earlier, new = tmp_path / "earlier", tmp_path / "new"
    args = [*FINETUNE, "--steps", "2", "--eval-every", "2", "--batch-size", "8"]
    done = run(sys.executable, "-m", "lora_np", *args, "--base", tmp_path / "node0" / "base", "--out", earlier)
    assert done.returncode == 0, done.stderr
    before = _files(earlier)
    expected = "rank 1:" if case == "truncated" else "the model weights loaded by rank 1 differ from rank 0's"
    for out, extra in ((earlier, ["--overwrite"]), (new, [])):
        command = [sys.executable, "-m", "lora_np", *args, "--base", "base", "--out", out, *extra]
        proc = run(MPIEXEC, "-n", "1", "-wdir", tmp_path / "node0", *command, ":",
                   "-n", "1", "-wdir", tmp_path / "node1", *command)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1 and expected in lines[0], proc.stderr
        assert lines[0].startswith("python -m lora_np finetune: error:"), lines
    assert _files(earlier) == before
    assert not new.exists()
