"""The output directory of a command: never silently overwritten, never left half-made.

    --out DIR              DIR must be new (or empty)
    --out DIR --overwrite  what an earlier run left in DIR (its known files) is replaced
    --out DIR --resume     the run in DIR continues from its last checkpoint, with the settings saved
                           in DIR/run_config.json; an option typed again must agree with them,
                           except --steps, which sets a new total and so extends the run

Everything is checked before DIR is touched; a command that fails before its first checkpoint
removes the DIR it created.
"""

import contextlib
import shutil
from pathlib import Path

from ..io.atomic import atomic_write_json, read_json
from ..io.train_checkpoint import latest_checkpoint

RUN_CONFIG = "run_config.json"
# What a command writes into --out; --overwrite removes these (and nothing else) first.
RUN_FILES = ("checkpoints", "log.jsonl", RUN_CONFIG, "config.json", "model.safetensors", "adapter_config.json",
             "adapter_model.safetensors", "char_vocab.json", "vocab.json", "merges.txt", "tokenizer.json",
             "tokenizer_config.json", "special_tokens_map.json", "results.json", "results.md", "loss_curves.png",
             "costs.png", "rank_sweep.png", "base", "full_finetune", "adapter")
# Options that say how to run, not what to compute: free to differ on --resume.
HOW_TO_RUN = {"resume", "overwrite", "quiet", "backend", "out", "checks"}
PATH_OPTIONS = ("base", "data")


def check_output_dir(out, resume=False, overwrite=False):
    """Refuse --out before anything is written: a file, or an earlier run's directory without
    --resume or --overwrite."""
    out = Path(out)
    if resume and overwrite:
        raise ValueError("--resume continues the run in --out and --overwrite replaces it; give one of them")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a directory (a new one, or an earlier run's with --resume)")
    if resume and not (out / RUN_CONFIG).is_file():
        raise FileNotFoundError(f"--resume: {out / RUN_CONFIG} not found; there is no run to continue in {out}")
    if not resume and not overwrite and out.is_dir() and any(out.iterdir()):
        raise ValueError(f"--out {out} already holds files; add --resume to continue that run, --overwrite to "
                         f"replace it, or choose a new directory")


@contextlib.contextmanager
def output_dir(out, overwrite=False):
    """Create (or, with --overwrite, clear the run files of) ``out``; if the body fails with an
    error before a checkpoint exists, remove the directory again if it was made here."""
    out = Path(out)
    created = not out.exists()
    if overwrite and out.is_dir():
        for name in RUN_FILES:
            target = out / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)
    try:
        yield out
    except Exception:
        if created and not (out / "checkpoints").exists():
            shutil.rmtree(out, ignore_errors=True)
        raise


def _normalised(key, value):
    return str(Path(value).resolve()) if key in PATH_OPTIONS and value is not None else value


def save_run_config(args):
    """The settings of a run, for --resume (paths made absolute, so a resume from elsewhere works)."""
    config = {k: _normalised(k, v) for k, v in vars(args).items() if k not in ("func", "given", "checks")}
    atomic_write_json(Path(args.out) / RUN_CONFIG, config)


def restore_run_args(args):
    """With --resume: the saved settings, checked against the options typed again.

    A typed option that differs from the saved one is refused (it would otherwise be silently
    replaced); --steps is honoured as the run's new total, and must not be below the step the
    run has reached.
    """
    out = Path(args.out)
    saved = read_json(out / RUN_CONFIG, "run configuration (needed by --resume)")
    for key in sorted(args.given - HOW_TO_RUN - {"steps"}):
        if key in saved and _normalised(key, getattr(args, key)) != saved[key]:
            flag = "--" + key.replace("_", "-")
            raise ValueError(f"--resume continues the run in {out} with its saved settings, but {flag} "
                             f"{getattr(args, key)} differs from the saved {saved[key]}; drop {flag}, or start "
                             f"a new run (a new --out, or --overwrite)")
    for key, value in saved.items():
        if key not in HOW_TO_RUN and key != "given" and not (key == "steps" and "steps" in args.given):
            setattr(args, key, value)
    if "steps" in args.given:
        ckpt = latest_checkpoint(out)
        done = read_json(ckpt / "state.json", "trainer state").get("step", 0) if ckpt else 0
        if isinstance(done, int) and args.steps < done:
            raise ValueError(f"--steps {args.steps} is below the {done} steps the run in {out} has already done; "
                             f"give a larger total to extend it")
    return args
