"""The training loop: AdamW, warmup + cosine, gradient clipping, evaluation, logs, checkpoints.

    result = train(model, dataset, TrainConfig(steps=500, lr=1e-3), out_dir="runs/x")

It trains whatever requires grad (everything for full fine-tuning, only A and B after add_lora),
stops cleanly on a NaN/inf loss (keeping the last good checkpoint) and on Ctrl-C (saving first),
and resumes a run bit for bit: weights, optimizer moments, schedule and both RNGs come back.
One step (``training_step``) reads top to bottom as nanoGPT's: micro-batches accumulate their
gradients (``grad_accum_steps``), then one clip, one AdamW step, one schedule step; the loop
(``_Run.run``) calls it and reports. Resume, interrupt and data parallelism are helpers they call.
"""

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import backend, distributed
from ..checks import check_int, check_number
from ..io.train_checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from ..lora import count_parameters
from ..optim import AdamW, WarmupCosine, clip_grad_norm_
from .evaluation import evaluate
from .progress import Progress, RunLog, StepClock, deferred_interrupt, plural, say


@dataclass
class TrainConfig:
    steps: int = 500
    batch_size: int = 32  # windows per optimizer step (the global batch, over every rank)
    grad_accum_steps: int = 1  # micro-batches the batch runs through forward/backward in (same update)
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
    progress_seconds: float = 30.0  # off a terminal: a progress line at most this often

    def __post_init__(self):
        for name in ("steps", "batch_size", "grad_accum_steps", "eval_every", "eval_batches", "log_every"):
            check_int(name, getattr(self, name), min=1)
        if self.grad_accum_steps > self.batch_size:
            raise ValueError(f"grad_accum_steps ({self.grad_accum_steps}) splits the batch of {self.batch_size} "
                             f"windows into micro-batches, so it must not exceed batch_size")
        for name in ("warmup_steps", "seed", "memory_steps"):
            check_int(name, getattr(self, name), min=0)
        if not math.isfinite(check_number("lr", self.lr, min=0, min_open=True)):
            raise ValueError(f"lr must be a finite positive number; got {self.lr!r}")
        check_number("min_lr_ratio", self.min_lr_ratio, min=0, max=1)
        check_number("grad_clip", self.grad_clip, min=0, min_open=True)
        check_number("progress_seconds", self.progress_seconds, min=0)


@dataclass
class TrainResult:
    status: str                       # "done", "nan" or "interrupted"
    step: int                         # optimizer steps completed
    history: list = field(default_factory=list)
    ms_per_step: float = float("nan")  # median over timed steps
    optimizer_state_bytes: int = 0
    peak_memory_bytes: int = 0
    message: str = ""


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


def training_step(model, dataset, opt, config, stop_requested=False):
    """One optimizer step, nanoGPT's way: returns (loss, lr or None on a non-finite loss, stop agreed).

    The global batch of ``config.batch_size`` windows (this rank's rows of it, under MPI) runs
    through forward and backward in ``config.grad_accum_steps`` micro-batches whose gradients add
    up in ``.grad``. The loss is the mean over the global batch's scored targets,
    ``L = (1/W) Σ_i ℓ_i``; a micro-batch m holding W_m of them has the model's loss
    ``L_m = (1/W_m) Σ_{i∈m} ℓ_i``, so it is scaled by ``W_m / W`` before its backward:
    ``Σ_m (W_m/W) ∇L_m = ∇L`` exactly, however the scored targets fall into micro-batches
    (a mean of micro-batch means would weigh a target by 1/W_m). Then one clip, one AdamW step.
    """
    x, y = distributed.shard_batch(*dataset.batch("train", config.batch_size, opt.data_rng))
    scored = int((y != -1).sum())  # W on this rank
    loss_sum = 0.0
    for xm, ym in micro_batches(x, y, config.grad_accum_steps):
        w_m = int((ym != -1).sum())
        if w_m == 0:
            continue
        _, loss = model(xm, ym)
        loss_sum += loss.item() * w_m
        if not math.isfinite(loss_sum):
            break
        (loss * (w_m / scored)).backward()
    loss, stop = _sum_over_ranks(opt.params, scored, loss_sum, stop_requested)
    if not math.isfinite(loss):
        return loss, None, stop
    clip_grad_norm_(opt.params, config.grad_clip)
    opt.optimizer.step()
    opt.optimizer.zero_grad()
    lr = opt.schedule.step()
    backend.synchronize()
    return loss, lr, stop


def micro_batches(x, y, n):
    """(x, y) split along the batch into ``n`` micro-batches (sizes differ by at most one row)."""
    edges = [len(x) * i // n for i in range(n + 1)]
    return [(x[lo:hi], y[lo:hi]) for lo, hi in zip(edges[:-1], edges[1:])]


def _sum_over_ranks(params, scored, loss_sum, stop_requested):
    """(the global batch's mean loss, whether any rank asked to stop). In one process: the rank's
    own. With several, one Allreduce leaves every rank with the global batch's gradient (each
    rank's weighted by the W_r targets it scored, see lora_np.distributed), its loss, and the
    ranks' agreement on a Ctrl-C, so that all stop after the same step. A rank with a non-finite
    loss sends it, and every rank stops."""
    if distributed.world_size() == 1:
        if scored == 0:
            raise ValueError("a training batch has no target that counts in the loss")
        return loss_sum / scored, stop_requested
    total, (loss_sum, stops) = distributed.allreduce_gradients(
        params, weight=scored, values=[loss_sum, float(stop_requested)])
    if total == 0:
        raise distributed.CollectiveError("a training batch has no target that counts in the loss on any rank")
    return loss_sum / total, stops > 0


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


def _kept_checkpoint(out_dir):
    kept = latest_checkpoint(out_dir) if out_dir else None
    return f"the last checkpoint is kept in {kept}" if kept else "no checkpoint had been saved yet"


def _check_ranks_alike(dataset, config, opt):
    """Before the first step: the global batch splits over the ranks, and every rank starts from
    the same settings, training data and trainable weights (or every rank stops, saying which)."""
    rows = distributed.local_batch_size(config.batch_size)
    if rows < config.grad_accum_steps:
        raise distributed.CollectiveError(
            f"each of the {distributed.world_size()} ranks holds {rows} of the batch's {config.batch_size} windows, "
            f"fewer than the {config.grad_accum_steps} micro-batches asked for; lower --grad-accum-steps to {rows}")
    tokens = [dataset.splits["train"][0]] if hasattr(dataset, "splits") else repr(dataset)
    distributed.check_same_settings(settings=asdict(config), data=tokens, weights=[p.data for p in opt.params])


def describe_run(model, dataset, config, step=0):
    """The start-up line: what trains, on what, for how long."""
    trainable, total = count_parameters(model)
    data = dataset.describe() if hasattr(dataset, "describe") else getattr(dataset, "name", "the data")
    start = f"resuming at step {step} of {config.steps}" if step else plural(config.steps, "step")
    accumulate = (f" in {config.grad_accum_steps} micro-batches (gradient accumulation)"
                  if config.grad_accum_steps > 1 else "")
    window = f" ({dataset.window_note})" if getattr(dataset, "window_note", "") else ""
    return (f"training {trainable:,} of {total:,} parameters ({100 * trainable / max(total, 1):.2f}%) on {data}; "
            f"{start}, batch {config.batch_size} × {dataset.block_size} tokens{window}{accumulate}"
            + (f", split over {distributed.world_size()} ranks" if distributed.world_size() > 1 else ""))


class _Run:
    """One call of ``train``: the state that lives for the run; ``run`` is the loop."""

    def __init__(self, model, dataset, config, opt, out_dir, step, history, extra_eval, quiet):
        self.model, self.dataset, self.config, self.opt, self.out_dir = model, dataset, config, opt, out_dir
        self.extra_eval, self.start = extra_eval, step
        self.log, self.clock = RunLog(out_dir, step, quiet), StepClock(config.memory_steps)
        self.progress = Progress(config.steps, step, quiet, config.progress_seconds)
        self.result = TrainResult(status="done", step=step, history=history)

    def run(self):
        """The loop: a step, its report, until the last step, a NaN loss or an agreed Ctrl-C."""
        r, c = self.result, self.config
        self.model.train()
        try:
            with deferred_interrupt() as interrupt:
                while r.step < c.steps:
                    with self.clock.measure(r.step - self.start):
                        loss, lr, stop = training_step(self.model, self.dataset, self.opt, c, interrupt.requested)
                    if lr is None:
                        self.stopped_by_nan(loss)
                        break
                    r.step += 1
                    self.report(loss, lr)
                    if stop and r.step < c.steps:
                        self.checkpoint()
                        self.stop("interrupted", f"interrupted at step {r.step}"
                                  + ("; checkpoint saved" if self.out_dir else ""))
                        break
        except KeyboardInterrupt:  # a second Ctrl-C, mid-step: the last complete checkpoint stands
            self.stop("interrupted", f"interrupted during step {r.step + 1}; " + _kept_checkpoint(self.out_dir))
        finally:
            self.progress.close()
            self.clock.close()
        return self.finish()

    def report(self, loss, lr):
        """The progress bar, the log line at ``log_every``, an evaluation and a checkpoint at ``eval_every``."""
        r, c = self.result, self.config
        self.progress.update(loss, self.clock.recent_ms_per_step())
        if r.step % c.log_every == 0:
            self.log.write({"step": r.step, "loss": loss, "lr": lr, "ms": 1000 * self.clock.last})
        if r.step % c.eval_every == 0 or r.step == c.steps:
            self.evaluate_and_log()
            self.checkpoint()

    def evaluate_and_log(self):
        c, step = self.config, self.result.step
        metrics = {f"val_{k}": v for k, v in evaluate(self.model, self.dataset, "val", c.batch_size,
                                                      c.eval_batches).items()}
        metrics.update(self.extra_eval(self.model) if self.extra_eval else {})
        self.result.history.append({"step": step, **metrics})
        self.log.write(self.result.history[-1],
                       f"step {step:5d} | " + " | ".join(f"{k} {v:.4f}" for k, v in metrics.items()))

    def checkpoint(self):
        _save_checkpoint(self.out_dir, self.result.step, self.model, self.opt, self.result.history, self.config)

    def stop(self, status, message):
        self.result.status, self.result.message = status, message

    def stopped_by_nan(self, loss):
        step = self.result.step + 1
        self.stop("nan", f"loss became {loss} at step {step}; training stopped; " + _kept_checkpoint(self.out_dir))
        self.log.write({"step": step, "error": self.result.message}, self.result.message)

    def finish(self):
        r = self.result
        r.ms_per_step, r.optimizer_state_bytes = self.clock.ms_per_step(), self.opt.optimizer.state_bytes()
        r.peak_memory_bytes = self.clock.peak or backend.device_memory_in_use()
        return r


def train(model, dataset, config, out_dir=None, resume=False, extra_eval=None, quiet=False, param_groups=None):
    """Train ``model``'s trainable parameters on ``dataset`` for ``config.steps`` optimizer steps.

    ``dataset``: a TokenDataset (``lora_np.data``). ``out_dir``: where log.jsonl and the checkpoints
    go (none: nothing is written); ``resume=True`` continues from its newest checkpoint.
    ``extra_eval(model) -> dict`` adds metrics to every evaluation (the demo measures task A there).
    ``param_groups``: AdamW's parameter groups when they differ (LoRA+'s ``loraplus_param_groups``);
    by default every trainable parameter at ``config.lr``. ``quiet``: print nothing.
    Returns a TrainResult: status "done", "nan" or "interrupted", steps done, evaluation history.
    """
    opt = _Optimization.create(model, config, param_groups)
    step, history = _resume(out_dir, model, opt) if resume else (0, [])
    if distributed.init() > 1:  # launched by mpiexec with several ranks (mpi4py is imported only then)
        _check_ranks_alike(dataset, config, opt)
        distributed.separate_random_streams(backend.rng())  # each rank its own dropout masks
        out_dir, quiet = (out_dir, quiet) if distributed.is_main() else (None, True)  # rank 0 writes, prints
    if out_dir:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    say(describe_run(model, dataset, config, step), quiet)
    return _Run(model, dataset, config, opt, out_dir, step, history, extra_eval, quiet).run()
