"""The training loop: AdamW, warmup + cosine, gradient clipping, evaluation, logs, checkpoints.

    result = train(model, dataset, TrainConfig(steps=500, lr=1e-3), out_dir="runs/x")

It trains whatever requires grad (everything for full fine-tuning, only A and B after add_lora),
stops cleanly on a NaN/inf loss (keeping the last good checkpoint) and on Ctrl-C (saving first),
and resumes a run bit for bit: weights, optimizer moments, schedule and both RNGs come back.
"""

import contextlib
import json
import math
import signal
import sys
import threading
import time
import tracemalloc
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import backend
from ..checks import check_int, check_number
from .evaluate import evaluate
from ..optim import AdamW, WarmupCosine, clip_grad_norm_
from ..io.train_checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint


@dataclass
class TrainConfig:
    steps: int = 500
    batch_size: int = 32
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 20
    weight_decay: float = 0.0
    betas: tuple = (0.9, 0.95)
    grad_clip: float = 1.0
    eval_every: int = 100
    eval_batches: int = 8
    log_every: int = 10
    seed: int = 0
    memory_steps: int = 0  # measure peak training memory over this many first steps (tracemalloc)

    def __post_init__(self):
        for name in ("steps", "batch_size", "eval_every", "eval_batches", "log_every"):
            check_int(name, getattr(self, name), min=1)
        for name in ("warmup_steps", "seed", "memory_steps"):
            check_int(name, getattr(self, name), min=0)
        if not math.isfinite(check_number("lr", self.lr, min=0, min_open=True)):
            raise ValueError(f"lr must be a finite positive number; got {self.lr!r}")
        check_number("min_lr_ratio", self.min_lr_ratio, min=0, max=1)
        check_number("grad_clip", self.grad_clip, min=0, min_open=True)


@dataclass
class TrainResult:
    status: str                       # "done", "nan" or "interrupted"
    step: int                         # optimizer steps completed
    history: list = field(default_factory=list)
    ms_per_step: float = float("nan")  # median over timed steps
    optimizer_state_bytes: int = 0
    peak_memory_bytes: int = 0
    message: str = ""


class _Log:
    """JSON lines in <out>/log.jsonl (lines after a resumed step are dropped) and console lines."""

    def __init__(self, out_dir, resume_step, quiet):
        self.path = Path(out_dir) / "log.jsonl" if out_dir else None
        self.quiet = quiet
        if self.path and self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, record, console=None):
        if self.path:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
        if console and not self.quiet:
            from tqdm import tqdm
            tqdm.write(console, file=sys.stdout)


def _progress(total, initial, quiet):
    """A tqdm bar on stderr (only on a terminal) whose postfix shows the latest loss."""
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, disable=quiet or not sys.stderr.isatty(), leave=False,
                dynamic_ncols=True, file=sys.stderr)


@contextlib.contextmanager
def _deferred_interrupt():
    """Ctrl-C sets a flag that the loop checks between steps, so a step is never half applied.
    A second Ctrl-C interrupts at once."""
    flag = {"stop": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag["stop"]:
            raise KeyboardInterrupt
        flag["stop"] = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


@dataclass
class _Optimization:
    """What a step updates besides the weights: the trainable parameters, AdamW, the schedule and
    the data-order generator. Saved in every checkpoint and restored on resume."""
    params: list
    optimizer: AdamW
    schedule: WarmupCosine
    data_rng: np.random.Generator

    @classmethod
    def create(cls, model, config, param_groups=None):
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("train: the model has no parameter with requires_grad=True")
        optimizer = AdamW(param_groups or params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
        schedule = WarmupCosine(optimizer, min(config.warmup_steps, config.steps), config.steps, config.min_lr_ratio)
        backend.manual_seed(config.seed)
        return cls(params, optimizer, schedule, np.random.default_rng(config.seed))


def _training_step(model, dataset, opt, config):
    """One optimizer step; returns (loss, lr). A non-finite loss returns before anything is applied."""
    x, y = dataset.batch("train", config.batch_size, opt.data_rng)
    _, loss = model(x, y)
    loss_value = loss.item()
    if not math.isfinite(loss_value):
        return loss_value, None
    loss.backward()
    clip_grad_norm_(opt.params, config.grad_clip)
    opt.optimizer.step()
    opt.optimizer.zero_grad()
    lr = opt.schedule.step()
    backend.synchronize()
    return loss_value, lr


def _save_checkpoint(out_dir, step, model, opt, history, config):
    if out_dir:
        save_checkpoint(out_dir, step, model, opt.optimizer, {
            "schedule": opt.schedule.state_dict(), "data_rng": opt.data_rng.bit_generator.state,
            "backend_rng": backend.get_rng_state(), "history": history, "config": asdict(config)})


def _resume(out_dir, model, opt):
    """Weights, AdamW moments, schedule and both RNGs from the newest checkpoint: (step, history)."""
    ckpt = latest_checkpoint(out_dir) if out_dir else None
    if ckpt is None:
        raise FileNotFoundError(f"--resume: no checkpoint found under {Path(out_dir or '.') / 'checkpoints'}")

    def restore(state):
        try:
            opt.schedule.load_state_dict(state["schedule"])
            opt.data_rng.bit_generator.state = state["data_rng"]
            backend.set_rng_state(state["backend_rng"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{ckpt}: damaged schedule or RNG state in state.json ({exc!r})") from None

    state = load_checkpoint(ckpt, model, opt.optimizer, restore)
    return state["step"], state["history"]


class _StepClock:
    """Wall time per step, except for the first ``memory_steps``, whose peak memory tracemalloc
    measures instead (tracing slows a step down, so those steps are not timed)."""

    def __init__(self, memory_steps):
        self.memory_steps, self.times, self.peak, self.last = memory_steps, [], 0, float("nan")

    @contextlib.contextmanager
    def measure(self, steps_done):
        measuring = steps_done < self.memory_steps and backend.get_backend() == "numpy"
        if measuring and not tracemalloc.is_tracing():
            tracemalloc.start()
        t0 = time.perf_counter()
        yield
        self.last = time.perf_counter() - t0
        if measuring:
            self.peak = max(self.peak, tracemalloc.get_traced_memory()[1])
            if steps_done + 1 == self.memory_steps:
                tracemalloc.stop()
        else:
            self.times.append(self.last)

    def close(self):
        if tracemalloc.is_tracing():
            tracemalloc.stop()

    def ms_per_step(self):
        return 1000 * float(np.median(self.times)) if self.times else float("nan")


def _nan_message(loss_value, step, out_dir):
    kept = latest_checkpoint(out_dir) if out_dir else None
    return (f"loss became {loss_value} at step {step + 1}; training stopped. "
            + (f"The last good checkpoint is kept in {kept}" if kept else "No checkpoint had been saved yet"))


def train(model, dataset, config, out_dir=None, resume=False, extra_eval=None, quiet=False, param_groups=None):
    """Train ``model``'s trainable parameters on ``dataset`` (see the module docstring).

    ``extra_eval(model) -> dict`` adds metrics to every evaluation (the demo measures task A there).
    ``param_groups``: AdamW's parameter groups when they differ (LoRA+'s ``loraplus_param_groups``);
    by default every trainable parameter at ``config.lr``.
    """
    opt = _Optimization.create(model, config, param_groups)
    step, history = _resume(out_dir, model, opt) if resume else (0, [])
    if out_dir:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    log, clock, start = _Log(out_dir, step, quiet), _StepClock(config.memory_steps), step
    result = TrainResult(status="done", step=step, history=history)

    def evaluate_and_log(step):
        metrics = {f"val_{k}": v for k, v in evaluate(model, dataset, "val", config.batch_size,
                                                      config.eval_batches).items()}
        metrics.update(extra_eval(model) if extra_eval else {})
        history.append({"step": step, **metrics})
        log.write(history[-1], f"step {step:5d} | " + " | ".join(f"{k} {v:.4f}" for k, v in metrics.items()))

    bar = _progress(config.steps, step, quiet)
    model.train()
    try:
        with _deferred_interrupt() as interrupt:
            while step < config.steps:
                if interrupt["stop"]:
                    _save_checkpoint(out_dir, step, model, opt, history, config)
                    result.status = "interrupted"
                    result.message = f"interrupted at step {step}" + ("; checkpoint saved" if out_dir else "")
                    break
                with clock.measure(step - start):
                    loss, lr = _training_step(model, dataset, opt, config)
                if lr is None:
                    result.status, result.message = "nan", _nan_message(loss, step, out_dir)
                    log.write({"step": step + 1, "error": result.message}, result.message)
                    break
                step += 1
                bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
                bar.update(1)
                if step % config.log_every == 0:
                    log.write({"step": step, "loss": loss, "lr": lr, "ms": 1000 * clock.last})
                if step % config.eval_every == 0 or step == config.steps:
                    evaluate_and_log(step)
                    _save_checkpoint(out_dir, step, model, opt, history, config)
    except KeyboardInterrupt:  # a second Ctrl-C, mid-step: the last complete checkpoint stands
        result.status, result.message = "interrupted", f"interrupted during step {step + 1}; the last checkpoint is kept"
    finally:
        bar.close()
        clock.close()
    result.step, result.ms_per_step = step, clock.ms_per_step()
    result.optimizer_state_bytes = opt.optimizer.state_bytes()
    result.peak_memory_bytes = clock.peak or backend.device_memory_in_use()
    return result
