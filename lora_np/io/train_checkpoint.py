"""Training checkpoints: trainable weights, optimizer state and trainer state, saved so a crash at
any moment leaves a complete, loadable checkpoint.

    <out>/checkpoints/step_000200/trainable.safetensors   the parameters that train (LoRA: A and B only)
    <out>/checkpoints/step_000200/optimizer.safetensors   AdamW moments, "state.<i>.exp_avg", ...
    <out>/checkpoints/step_000200/state.json              step, RNG states, schedule, history
    <out>/checkpoints/latest.json                         {"dir": "step_000200", "step": 200}

A new step directory is written completely first; only then does latest.json (itself replaced
atomically) point to it, and only then are older directories removed.
"""

import shutil
from pathlib import Path

import numpy as np

from .. import backend
from .atomic import atomic_write_json, read_json
from .safetensors_file import read_safetensors, write_safetensors

KEEP = 2


def _trainable(model):
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(out_dir, step, model, optimizer, state):
    root = Path(out_dir) / "checkpoints"
    step_dir = root / f"step_{step:06d}"
    step_dir.mkdir(parents=True, exist_ok=True)
    write_safetensors(step_dir / "trainable.safetensors", {n: p.data for n, p in _trainable(model).items()})
    opt_state = optimizer.state_dict()
    arrays, scalars = {}, {}
    for i, entry in opt_state["state"].items():
        for key, value in entry.items():
            if isinstance(value, np.ndarray):
                arrays[f"state.{i}.{key}"] = value
            else:
                scalars[f"{i}.{key}"] = value
    write_safetensors(step_dir / "optimizer.safetensors", arrays)
    atomic_write_json(step_dir / "state.json", {**state, "step": step, "optimizer_scalars": scalars,
                                                "param_groups": opt_state["param_groups"]})
    atomic_write_json(root / "latest.json", {"dir": step_dir.name, "step": step})
    for old in sorted(p for p in root.glob("step_*") if p.is_dir() and p != step_dir)[:-(KEEP - 1) or None]:
        shutil.rmtree(old, ignore_errors=True)
    return step_dir


def latest_checkpoint(out_dir):
    """The newest complete checkpoint directory, or None if there is none."""
    root = Path(out_dir) / "checkpoints"
    if not (root / "latest.json").is_file():
        return None
    latest = read_json(root / "latest.json", "checkpoint pointer")
    step_dir = root / str(latest.get("dir", ""))
    if not (step_dir / "state.json").is_file():
        raise ValueError(f"{root / 'latest.json'} points to {step_dir}, which holds no complete checkpoint")
    return step_dir


_STATE_FIELDS = {"step": int, "history": list, "schedule": dict, "data_rng": dict, "backend_rng": dict,
                 "param_groups": list, "optimizer_scalars": dict}


def load_checkpoint(step_dir, model, optimizer, restore=None):
    """Restore trainable weights and optimizer state; returns state.json. Everything is checked,
    and ``restore(state)`` (the caller's own part: schedule, RNGs) runs, before the weights change."""
    step_dir = Path(step_dir)
    state = read_json(step_dir / "state.json", "trainer state")
    for key, kind in _STATE_FIELDS.items():
        if not isinstance(state.get(key), kind) or isinstance(state.get(key), bool):
            raise ValueError(f"{step_dir / 'state.json'}: field {key!r} must be a {kind.__name__}; "
                             f"got {state.get(key)!r:.60} (a damaged checkpoint?)")
    weights, _ = read_safetensors(step_dir / "trainable.safetensors")
    trainable = _trainable(model)
    if set(weights) != set(trainable):
        raise ValueError(f"{step_dir}: checkpoint trains {sorted(weights)[:4]}..., this model trains "
                         f"{sorted(trainable)[:4]}... (a checkpoint from another run?)")
    for name, p in trainable.items():
        if weights[name].shape != p.shape:
            raise ValueError(f"{step_dir}: {name} has shape {weights[name].shape}, the model needs {p.shape}")
    arrays, _ = read_safetensors(step_dir / "optimizer.safetensors")
    entries = {}
    try:
        for key, value in arrays.items():
            _, i, name = key.split(".", 2)
            entries.setdefault(int(i), {})[name] = value
        for key, value in state["optimizer_scalars"].items():
            i, name = key.split(".", 1)
            entries.setdefault(int(i), {})[name] = value
        if not all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in state["param_groups"]):
            raise ValueError("param_groups must be a list of objects with a 'params' list")
    except ValueError as exc:
        raise ValueError(f"{step_dir}: damaged optimizer state ({exc})") from None
    optimizer.load_state_dict({"state": entries, "param_groups": state["param_groups"]})
    if restore is not None:
        restore(state)
    for name, p in trainable.items():
        p.data = backend.xp.array(weights[name], dtype=p.dtype)
    return state
