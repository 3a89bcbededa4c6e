"""Determinism: the same seed gives bit-identical losses and weights in separate processes (the
thread pool splits work so that every element is computed the same way whatever the split)."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from lora_np.io.safetensors_file import read_safetensors

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "16", "--batch-size", "8",
        "--steps", "40", "--eval-every", "20", "--quiet"]


def _run(*args):
    proc = subprocess.run([sys.executable, "-m", "lora_np", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=300)
    assert proc.returncode == 0, proc.stderr


def _digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _losses(out):
    return [r["loss"] for r in map(json.loads, open(Path(out) / "log.jsonl")) if "loss" in r]


def test_same_seed_same_bits_across_processes(tmp_path):
    for name in ("a", "b"):
        _run("pretrain", "--task", "copy", "--out", tmp_path / name, "--seed", 7, *TINY)
        _run("finetune", "--base", tmp_path / name, "--task", "shift", "--out", tmp_path / f"{name}_lora", "--seed", 7,
             "--steps", 20, "--eval-every", 10, "--batch-size", 8, "--quiet", "--lora-dropout", "0.1")
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b") and len(_losses(tmp_path / "a")) == 4
    assert _digest(tmp_path / "a" / "model.safetensors") == _digest(tmp_path / "b" / "model.safetensors")
    assert _losses(tmp_path / "a_lora") == _losses(tmp_path / "b_lora")
    a, meta_a = read_safetensors(tmp_path / "a_lora" / "adapter_model.safetensors")
    b, meta_b = read_safetensors(tmp_path / "b_lora" / "adapter_model.safetensors")
    assert meta_a["base_model_fingerprint"] == meta_b["base_model_fingerprint"]  # (the recorded base paths differ)
    assert a.keys() == b.keys() and all(a[k].tobytes() == b[k].tobytes() for k in a)
    _run("pretrain", "--task", "copy", "--out", tmp_path / "c", "--seed", 8, *TINY)
    assert _losses(tmp_path / "c") != _losses(tmp_path / "a")
