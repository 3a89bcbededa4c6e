"""The trainer: determinism, resume on the same loss curve, NaN stops with a valid checkpoint,
LoRA trains only A and B, checkpoint contents, and bad configs."""

import json

import numpy as np
import pytest

import lora_np
from lora_np import GPT, GPTConfig, LoraConfig, add_lora
from lora_np.data import task_dataset
from lora_np import TrainConfig, train
from lora_np.io.train_checkpoint import latest_checkpoint, load_checkpoint
from lora_np.optim import AdamW


def _model(seed=0):
    lora_np.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=10, block_size=16, n_layer=1, n_head=2, n_embd=16))


@pytest.fixture(scope="module")
def data():
    return task_dataset("copy", block_size=16, n_train=300, n_val=60)


def _losses(path):
    return [r["loss"] for r in map(json.loads, open(path)) if "loss" in r]


def test_same_seed_gives_identical_losses(data, tmp_path):
    cfg = TrainConfig(steps=12, eval_every=6, log_every=1, batch_size=8, seed=3)
    train(_model(), data, cfg, out_dir=tmp_path / "a", quiet=True)
    train(_model(), data, cfg, out_dir=tmp_path / "b", quiet=True)
    a, b = _losses(tmp_path / "a" / "log.jsonl"), _losses(tmp_path / "b" / "log.jsonl")
    assert len(a) == 12 and a == b
    train(_model(), data, TrainConfig(steps=12, eval_every=6, log_every=1, batch_size=8, seed=4),
          out_dir=tmp_path / "c", quiet=True)
    assert _losses(tmp_path / "c" / "log.jsonl") != a


@pytest.mark.parametrize("use_lora", [False, True], ids=["full", "lora"])
def test_resume_continues_the_same_loss_curve(data, tmp_path, use_lora):
    def fresh():
        m = _model()
        return add_lora(m, LoraConfig(r=2)) if use_lora else m

    cfg = TrainConfig(steps=16, eval_every=8, log_every=1, batch_size=8, lr=3e-3, warmup_steps=4)
    straight = train(fresh(), data, cfg, out_dir=tmp_path / "straight", quiet=True)
    first = train(fresh(), data, TrainConfig(**{**cfg.__dict__, "steps": 16}), out_dir=tmp_path / "split", quiet=True)
    assert first.status == "done"
    # Pretend the run stopped at step 8: keep only that checkpoint, then resume from it.
    import shutil
    root = tmp_path / "split" / "checkpoints"
    shutil.rmtree(root / "step_000016")
    (root / "latest.json").write_text(json.dumps({"dir": "step_000008", "step": 8}))
    resumed = train(fresh(), data, cfg, out_dir=tmp_path / "split", resume=True, quiet=True)
    assert resumed.step == 16
    assert _losses(tmp_path / "split" / "log.jsonl") == _losses(tmp_path / "straight" / "log.jsonl")
    assert resumed.history[-1] == straight.history[-1]


class NanAfter(GPT):
    """A GPT whose loss turns NaN after ``limit`` forward passes (to test the trainer's guard)."""

    def __init__(self, config, limit):
        super().__init__(config)
        self.calls, self.limit = 0, limit

    def forward(self, idx, targets=None):
        logits, loss = super().forward(idx, targets)
        self.calls += self.training
        if self.training and self.calls > self.limit:
            loss = loss * float("nan")
        return logits, loss


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(data, tmp_path):
    lora_np.manual_seed(0)
    model = NanAfter(GPTConfig(vocab_size=10, block_size=16, n_layer=1, n_head=2, n_embd=16), limit=13)
    result = train(model, data, TrainConfig(steps=30, eval_every=5, batch_size=8), out_dir=tmp_path, quiet=True)
    assert result.status == "nan" and result.step == 13
    assert "loss became nan at step 14" in result.message and "step_000010" in result.message
    ckpt = latest_checkpoint(tmp_path)
    assert ckpt.name == "step_000010"
    fresh = _model()
    state = load_checkpoint(ckpt, fresh, AdamW(fresh.parameters()))
    assert state["step"] == 10
    assert all(np.isfinite(v).all() for v in fresh.state_dict().values())


def test_lora_training_checkpoints_only_adapter_weights(data, tmp_path):
    model = add_lora(_model(), LoraConfig(r=2, target_modules=["c_attn", "c_fc"]))
    base = {k: v for k, v in model.state_dict().items() if ".lora_" not in k}
    result = train(model, data, TrainConfig(steps=10, eval_every=5, batch_size=8), out_dir=tmp_path, quiet=True)
    from lora_np.io.safetensors_file import read_safetensors
    saved, _ = read_safetensors(latest_checkpoint(tmp_path) / "trainable.safetensors")
    assert saved and all(".lora_" in k for k in saved)
    assert result.optimizer_state_bytes == 2 * sum(v.nbytes for v in saved.values())
    for k, v in base.items():
        np.testing.assert_array_equal(model.state_dict()[k], v)


def test_resume_without_a_checkpoint_is_a_clear_error(data, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(_model(), data, TrainConfig(steps=4), out_dir=tmp_path, resume=True, quiet=True)


@pytest.mark.parametrize("kwargs,match", [(dict(steps=0), "steps"), (dict(lr=0), "lr"), (dict(lr=float("nan")), "lr"),
                                          (dict(batch_size=-1), "batch_size"), (dict(warmup_steps=-1), "warmup"),
                                          (dict(grad_clip=0), "grad_clip")])
def test_bad_train_configs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_a_model_with_nothing_to_train_is_refused(data):
    model = _model().requires_grad_(False)
    with pytest.raises(ValueError, match="requires_grad"):
        train(model, data, TrainConfig(steps=2), quiet=True)


class _Fixed:
    """A dataset whose every batch is the same (x, y): the step's input is known exactly."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def batch(self, split, batch_size, rng):
        return self.x[:batch_size], self.y[:batch_size]


def _step_once(x, y, config):
    """The float64 model's trainable weights after one training_step on (x, y)."""
    from lora_np.training.loop import _Optimization, training_step
    lora_np.manual_seed(1)
    model = add_lora(GPT(GPTConfig(vocab_size=10, block_size=16, n_layer=2, n_head=2, n_embd=16), dtype=np.float64),
                     LoraConfig(r=2, init_lora_weights="gaussian", target_modules=["c_attn", "c_fc"]))
    opt = _Optimization.create(model, config)
    loss, lr, stop = training_step(model, _Fixed(x, y), opt, config)
    return loss, {k: v.copy() for k, v in model.state_dict().items() if ".lora_" in k}


@pytest.mark.parametrize("accum", [2, 3, 6])
def test_accumulated_micro_batches_give_the_update_of_one_big_batch(accum):
    """Oracle: one step on the whole batch (grad_accum_steps=1), float64. The rows hold very different
    numbers of scored targets (1 to 16), so a mean of micro-batch means would move the update; the
    exact per-token weighting W_m / W gives the same loss and weights to rounding. Clipping is on
    (grad_clip small), so the gradient's norm must agree too."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 10, size=(6, 16))
    y = rng.integers(0, 10, size=(6, 16))
    for row, keep in enumerate([16, 1, 3, 16, 2, 9]):
        y[row, :16 - keep] = -1
    big = TrainConfig(steps=2, batch_size=6, lr=1e-2, warmup_steps=0, grad_clip=0.05)
    loss_big, w_big = _step_once(x, y, big)
    loss_acc, w_acc = _step_once(x, y, TrainConfig(**{**big.__dict__, "grad_accum_steps": accum}))
    assert abs(loss_acc - loss_big) < 1e-12
    for name, w in w_big.items():
        np.testing.assert_allclose(w_acc[name], w, rtol=0, atol=1e-12, err_msg=name)
    # the update moved the weights: the comparison is not between two untouched copies
    assert max(np.abs(w - _step_once(x, y, TrainConfig(**{**big.__dict__, "lr": 1e-9}))[1][n]).max()
               for n, w in w_big.items()) > 1e-4


def test_grad_accum_steps_above_the_batch_is_refused():
    with pytest.raises(ValueError, match="grad_accum_steps"):
        TrainConfig(batch_size=4, grad_accum_steps=5)
