"""The output directory of a command: never silently overwritten, never left half-made.

    --out DIR              DIR must be new (or empty)
    --out DIR --overwrite  what an earlier run left in DIR (its known files) is replaced
    --out DIR --resume     the run in DIR continues from its last checkpoint, with the settings saved
                           in DIR/run_config.json; an option typed again must agree with them,
                           except --steps, which sets a new total and so extends the run, and
                           the reporting settings (--eval-every), which change what is reported only

Everything is checked before DIR is touched; a command that fails before its first checkpoint
removes the DIR it created. While a command writes DIR it holds an exclusive lock on DIR/.lock
(``flock``: the system drops it when the process ends, so a crashed run leaves no stale lock), and
a second command on the same DIR is refused.
"""

import contextlib
import os
import shutil
from pathlib import Path

try:
    import fcntl
except ImportError:  # not on POSIX: no lock
    fcntl = None

from .. import distributed
from ..io.atomic import atomic_write_json, read_json
from ..io.train_checkpoint import latest_checkpoint

RUN_CONFIG, LOCK_FILE = "run_config.json", ".lock"
# What a command writes into --out; --overwrite removes these (and nothing else) first.
RUN_FILES = ("checkpoints", "log.jsonl", RUN_CONFIG, "config.json", "model.safetensors", "adapter_config.json",
             "adapter_model.safetensors", "char_vocab.json", "vocab.json", "merges.txt", "tokenizer.json",
             "tokenizer_config.json", "special_tokens_map.json", "generation_config.json", "results.json", "results.md",
             "loss_curves.png", "costs.png", "rank_sweep.png", "base", "full_finetune", "adapter", "encoder.json",
             "vocab.bpe")
FINAL_FILES = ("model.safetensors", "adapter_model.safetensors")
# Options that say how to run, not what to compute: free to differ on --resume.
HOW_TO_RUN = {"resume", "overwrite", "quiet", "backend", "out", "checks", "prog", "data_parallel", "world_size"}
# Options that say what a run reports, not what it computes: on --resume a typed one replaces the
# saved one (evaluations and checkpoints read the weights, never change them or any RNG).
REPORTING = {"eval_every"}
NOT_SAVED = ("func", "given", "checks", "prog")
PATH_OPTIONS = ("base", "data")


def _check_writable(out):
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"--out {out}: {existing} is not writable (permission denied); choose a directory "
                              f"you can write to")


def check_output_dir(out, resume=False, overwrite=False, resumable=True):
    """Refuse --out before anything is written: a file, an unwritable place, or an earlier run's
    directory without --resume (where the command has it) or --overwrite."""
    out = Path(out)
    if resume and overwrite:
        raise ValueError("--resume continues the run in --out and --overwrite replaces it; give one of them")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a directory (a new one, or an earlier run's with --resume)")
    _check_writable(out)
    if resume and not (out / RUN_CONFIG).is_file():
        raise FileNotFoundError(f"--resume: {out / RUN_CONFIG} not found; there is no run to continue in {out}")
    if (not resume and not overwrite and distributed.is_main() and out.is_dir()
            and any(p.name != LOCK_FILE for p in out.iterdir())):
        resume_hint = "add --resume to continue that run, " if resumable else "add "
        raise ValueError(f"--out {out} already holds files; {resume_hint}--overwrite to replace it, or choose a "
                         f"new directory")


class OutputLock:
    """The exclusive lock on ``out/.lock``; ``take`` once ``out`` exists (again later is a no-op)."""

    def __init__(self, out):
        self.out, self.file = Path(out), None

    def take(self):
        if self.file is not None or fcntl is None or not self.out.is_dir() or not distributed.is_main():
            return  # in a data-parallel run only rank 0 writes --out, and it alone holds the lock
        self.file = open(self.out / LOCK_FILE, "a")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.file.close()
            self.file = None
            raise ValueError(f"--out {self.out} is in use by another lora_np run; wait for it to finish, or "
                             f"choose another --out") from None

    def release(self):
        """Remove the lock file while still holding it (the folder keeps only what the command wrote), then let go."""
        if self.file is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.out / LOCK_FILE)
            self.file.close()
            self.file = None


@contextlib.contextmanager
def locked(out):
    """Hold ``out``'s lock for the whole command: taken now if ``out`` exists, else by ``output_dir``."""
    lock = OutputLock(out)
    lock.take()
    try:
        yield lock
    finally:
        lock.release()


@contextlib.contextmanager
def output_dir(out, overwrite=False, lock=None):
    """Create (or, with --overwrite, clear the run files of) ``out`` and take its ``lock``; if the
    body fails with an error before a checkpoint exists, remove the directory again if it was made here.
    In a data-parallel run the other ranks leave ``out`` to rank 0."""
    out = Path(out)
    if not distributed.is_main():
        yield out
        return
    created = not out.exists()
    if created:
        out.mkdir(parents=True)
    if lock is not None:
        lock.take()
    if overwrite and out.is_dir():
        for name in RUN_FILES:
            target = out / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
    try:
        yield out
    except Exception:
        if created and not (out / "checkpoints").exists():
            shutil.rmtree(out, ignore_errors=True)
        raise


def _normalised(key, value):
    return str(Path(value).resolve()) if key in PATH_OPTIONS and value is not None else value


def save_run_config(args):
    """The settings of a run, for --resume (paths made absolute, so a resume from elsewhere works),
    and the number of ranks that trained it (a resume may use another: the global batch is the same)."""
    config = {k: _normalised(k, v) for k, v in vars(args).items() if k not in NOT_SAVED}
    config["world_size"] = distributed.world_size()
    atomic_write_json(Path(args.out) / RUN_CONFIG, config)


def restore_run_args(args):
    """With --resume: the saved settings, checked against the options typed again.

    A typed option that differs from the saved one is refused (it would otherwise be silently
    replaced); --steps is honoured as the run's new total, and must not be below the step the
    run has reached.
    """
    out = Path(args.out)
    saved = read_json(out / RUN_CONFIG, "run configuration (needed by --resume)")
    for key in sorted(args.given - HOW_TO_RUN - REPORTING - {"steps"}):
        if key in saved and _normalised(key, getattr(args, key)) != saved[key]:
            flag = "--" + key.replace("_", "-")
            raise ValueError(f"--resume continues the run in {out} with its saved settings, but {flag} "
                             f"{getattr(args, key)} differs from the saved {saved[key]}; drop {flag}, or start "
                             f"a new run (a new --out, or --overwrite)")
    for key, value in saved.items():
        typed_anew = key in args.given and (key == "steps" or key in REPORTING)
        if key not in HOW_TO_RUN and key != "given" and not typed_anew:
            setattr(args, key, value)
    done = steps_done(out)
    if "steps" in args.given and args.steps < done:
        raise ValueError(f"--steps {args.steps} is below the {done} steps the run in {out} has already done; "
                         f"give a larger total to extend it")
    if done >= args.steps and any((out / name).is_file() for name in FINAL_FILES):
        raise ValueError(f"the run in {out} has already finished its {done} steps; to train longer, give a new "
                         f"total: --resume --steps N with N above {done}")
    return args


def steps_done(out):
    """The step of the newest checkpoint in ``out`` (0 if none)."""
    ckpt = latest_checkpoint(out)
    done = read_json(ckpt / "state.json", "trainer state").get("step", 0) if ckpt else 0
    return done if isinstance(done, int) else 0
