"""Run by tests/test_distributed.py under ``mpiexec -n 2``: lora_np.distributed's API on a tiny
model, each check against the oracle of one process on the whole global batch (which every rank
can compute for itself, since it holds the whole batch before it takes its shard).

    mpiexec -n 2 python tests/distributed_checks.py gradients device settings stop streams
    mpiexec -n 2 python tests/distributed_checks.py train OUT    (and without mpiexec: the oracle)
    mpiexec -n 2 python tests/distributed_checks.py die OUT      (rank 1 fails in step 5)
    mpiexec -n 2 python tests/distributed_checks.py cli OUT finetune ... --out OUT
    LORA_NP_MPI_TIMEOUT=1 mpiexec -n 2 python tests/distributed_checks.py hang

Prints one line "rank R ok ..." per check and rank when it passed; an AssertionError otherwise.
"""

import os
import sys
import time

import numpy as np

from lora_np import GPT, GPTConfig, LoraConfig, add_lora, backend, distributed, to_numpy
from lora_np.data import task_dataset


def tiny_lora_model():
    backend.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=16, block_size=12, n_layer=1, n_head=2, n_embd=16, dropout=0.0))
    return add_lora(model, LoraConfig(r=2, target_modules=["c_attn", "c_fc"], lora_dropout=0.0))


def loss_and_gradients(model, x, y):
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = None
    _, loss = model(x, y)
    loss.backward()
    return loss.item(), params


def check_gradients(device=False):
    """Sharded gradients, weighted by each rank's counted targets and summed in one Allreduce,
    equal one process's gradients on the whole batch; the plain mean over ranks does not (the
    ranks hold different numbers of counted targets, which is what makes the check sharp)."""
    model = tiny_lora_model()
    data = task_dataset("copy", block_size=12, n_train=200, n_val=20)
    x, y = data.batch("train", 6, np.random.default_rng(3))
    full_loss, params = loss_and_gradients(model, x, y)
    oracle = [to_numpy(p.grad) for p in params]

    x_r, y_r = distributed.shard_batch(x, y)
    assert len(x_r) == 3 and np.array_equal(x_r, x[3 * distributed.rank():3 * distributed.rank() + 3])
    counted = int((y_r != -1).sum())
    local_loss, params = loss_and_gradients(model, x_r, y_r)
    local = [to_numpy(p.grad) for p in params]
    total, (loss_sum,) = distributed.allreduce_gradients(params, weight=counted, values=[local_loss * counted])
    assert total == int((y != -1).sum()), (total, int((y != -1).sum()))
    assert abs(loss_sum / total - full_loss) < 1e-5 * abs(full_loss), (loss_sum / total, full_loss)
    for p, want in zip(params, oracle):
        if device:
            assert isinstance(p.grad, backend.xp.ndarray), type(p.grad)
        np.testing.assert_allclose(to_numpy(p.grad), want, rtol=2e-5, atol=1e-7)

    counts = np.zeros(2)
    counts[distributed.rank()] = counted
    distributed._world[1].Allreduce(distributed._world[0].IN_PLACE, counts)
    assert counts[0] != counts[1], "the test batch must give the ranks different target counts"
    for p, g in zip(params, local):
        p.grad = backend.asarray(g)
    distributed.allreduce_gradients(params)  # weight 1: the plain mean over ranks, wrong here
    assert max(np.abs(to_numpy(p.grad) - want).max() for p, want in zip(params, oracle)) > 1e-5
    return f"max |g - g_oracle| checked on {len(params)} tensors"


def check_device():
    """The same on the stand-in device module (tests/device_standin.py): through a host copy, and
    handed to MPI directly as a CUDA-aware MPI would take it."""
    sys.path.insert(0, os.path.dirname(__file__))
    from device_standin import standin
    with backend.using(standin, "standin"):
        staged = check_gradients(device=True)
        os.environ[distributed.CUDA_AWARE_VARIABLE] = "1"
        direct = check_gradients(device=True)
    return f"staged: {staged}; direct: {direct}"


def check_settings():
    """Equal settings pass; a rank with other arguments or other weights is named by every rank."""
    model = tiny_lora_model()
    weights = [p.data for p in model.parameters()]
    distributed.check_same_settings(arguments={"lr": 1e-3, "given": {"a", "b", "c"}}, weights=weights)
    if distributed.rank() == 1:
        weights[0] = weights[0] + 1
    try:
        distributed.check_same_settings(arguments={"lr": 1e-3 * (1 + distributed.rank())}, data=[np.arange(5)],
                                        weights=weights)
    except distributed.CollectiveError as exc:
        message = str(exc)
    else:
        raise AssertionError("ranks with different settings were not detected")
    assert "arguments of rank 1" in message and "weights of rank 1" in message and "data of" not in message, message
    return message


def check_stop():
    """A stop request made on one rank only reaches every rank through the step's buffer."""
    model = tiny_lora_model()
    params = [p for p in model.parameters() if p.requires_grad]
    _, (stops,) = distributed.allreduce_gradients(params, values=[float(distributed.rank() == 1)])
    assert stops == 1 and all(p.grad is None for p in params)
    return "stop seen by every rank; no gradient where no rank had one"


def check_streams():
    """Each rank draws its own dropout masks, rank 0 those of one process; after a resume (rank 0's
    saved state restored on every rank, then the jump again) each rank continues its own stream."""
    MPI, comm = distributed._world
    backend.manual_seed(5)
    one_process = backend.rng().random(4)
    backend.manual_seed(5)
    distributed.separate_random_streams(backend.rng())
    draws = backend.rng().random(4)
    every = np.empty((2, 4))
    comm.Allgather(draws, every)
    assert not np.allclose(every[0], every[1]) and np.array_equal(every[0], one_process), every
    saved = comm.bcast(backend.get_rng_state(), root=0)  # what rank 0's checkpoint holds
    continuing = backend.rng().random(3)
    backend.set_rng_state(saved)
    distributed.separate_random_streams(backend.rng())
    assert np.array_equal(backend.rng().random(3), continuing)
    return "independent streams, rank 0's = one process's, resumed exactly"


def record_writes(out):
    """Every file or directory this process creates, replaces or removes under ``out`` (audit hooks
    see the library's writes however they are made)."""
    out, seen = os.path.abspath(out), []

    def hook(event, args):
        if event == "open" and args[0] is not None and (isinstance(args[0], str) or hasattr(args[0], "__fspath__")):
            mode, flags = args[1], args[2]
            writing = any(c in (mode or "") for c in "wax+") or (mode is None and flags & (os.O_WRONLY | os.O_RDWR))
            paths = [args[0]] if writing else []
        elif event in ("os.mkdir", "os.remove", "os.rmdir", "os.rename", "shutil.rmtree"):
            paths = [a for a in args[:2] if isinstance(a, (str, os.PathLike))]
        else:
            return
        seen.extend(f"{event} {p}" for p in paths if os.path.abspath(os.fspath(p)).startswith(out))

    sys.addaudithook(hook)
    return seen


def check_train(out):
    """lora_np.train on N ranks: rank 0 alone writes log, checkpoints and the adapter; the adapter
    is compared with the one-process run's by the test."""
    from lora_np import TrainConfig, save_adapter, train
    writes = record_writes(out)
    model = tiny_lora_model()
    data = task_dataset("copy", block_size=12, n_train=200, n_val=20)
    config = TrainConfig(steps=4, batch_size=6, lr=1e-2, warmup_steps=1, eval_every=2, eval_batches=2, log_every=1)
    result = train(model, data, config, out_dir=out, quiet=True)
    assert result.status == "done" and result.step == 4, result
    if distributed.is_main():
        save_adapter(model, out)
    return f"{len(writes)} writes: {sorted(set(w.split()[0] for w in writes))}"


class FailsOnRank1:
    """A dataset whose batches fail on rank 1 in the 5th step (a rank dying mid-run)."""

    def __init__(self, data):
        self.data, self.splits, self.block_size, self.drawn = data, data.splits, data.block_size, 0

    def batch(self, split, batch_size, rng):
        self.drawn += split == "train"
        if distributed.rank() == 1 and self.drawn == 5:
            raise OSError("rank 1 lost its data file")
        return self.data.batch(split, batch_size, rng)

    def fixed_batches(self, *args):
        return self.data.fixed_batches(*args)


def check_a_rank_dies(out):
    """Rank 1 fails in step 5: every rank must stop (not hang); the step-2 checkpoint, which rank 0
    finished before it joined step 3, is kept (step 4's may be cut short by the abort)."""
    from lora_np import TrainConfig, train
    data = FailsOnRank1(task_dataset("copy", block_size=12, n_train=200, n_val=20))
    config = TrainConfig(steps=6, batch_size=6, eval_every=2, eval_batches=1)
    train(tiny_lora_model(), data, config, out_dir=out, quiet=True)
    raise AssertionError("a rank failed, yet training finished")


def check_a_rank_hangs():
    """With LORA_NP_MPI_TIMEOUT=1, rank 0 waits 1 s for rank 1 (which sleeps) and aborts the job."""
    model = tiny_lora_model()
    params = [p for p in model.parameters() if p.requires_grad]
    if distributed.rank() == 1:
        time.sleep(60)
    distributed.allreduce_gradients(params)
    raise AssertionError("the Allreduce returned although rank 1 was asleep")


def check_cli(out, argv):
    """The command line on N ranks, its writes recorded: rank 0's, and none from the others."""
    from lora_np.app.cli import main
    writes = record_writes(out)
    code = main(argv, prog="python -m lora_np")
    assert code == 0, code
    return f"{len(writes)} writes"


if __name__ == "__main__":
    if sys.argv[1] != "cli":  # the command line joins the job itself
        distributed.init()
    checks = {"gradients": check_gradients, "device": check_device, "settings": check_settings,
              "stop": check_stop, "streams": check_streams, "train": lambda: check_train(sys.argv[2]),
              "die": lambda: check_a_rank_dies(sys.argv[2]), "cli": lambda: check_cli(sys.argv[2], sys.argv[3:]),
              "hang": check_a_rank_hangs}
    with distributed.stop_every_rank_on_error():  # a failed check on one rank must not hang the other
        for name in sys.argv[1:2] if sys.argv[1] in ("train", "die", "cli", "hang") else sys.argv[1:]:
            assert name in ("train", "cli") or distributed.world_size() == 2, "run under mpiexec -n 2"
            outcome = checks[name]()
            print(f"rank {distributed.rank()} ok {name}: {outcome}", flush=True)
