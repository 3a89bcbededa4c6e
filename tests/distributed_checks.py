"""Run by tests/test_distributed.py under ``mpiexec -n 2``: lora_np.distributed's API on a tiny
model, each check against the oracle of one process on the whole global batch (which every rank
can compute for itself, since it holds the whole batch before it takes its shard).

    mpiexec -n 2 python tests/distributed_checks.py {gradients,device,settings,stop}

Prints one line "rank R ok ..." per rank when every check passed; an AssertionError otherwise.
"""

import os
import sys

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


if __name__ == "__main__":
    assert distributed.init() == 2, "run under mpiexec -n 2"
    check = {"gradients": check_gradients, "device": check_device, "settings": check_settings,
             "stop": check_stop}[sys.argv[1]]
    with distributed.stop_every_rank_on_error():  # a failed check on one rank must not hang the other
        print(f"rank {distributed.rank()} ok {sys.argv[1]}: {check()}", flush=True)
