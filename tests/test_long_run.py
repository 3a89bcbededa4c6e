"""Long-run stability (slow, ~40 s): 2,000 float32 LoRA steps of 8 windows with no NaN and no memory
growth (RSS at step 2,000 within 5% of RSS at step 200: a leak of 2 KB a step would show). Runs
benchmarks/long_run.py in a subprocess."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_two_thousand_lora_steps_without_nan_or_memory_growth(tmp_path, backend_name):
    out = tmp_path / "long_run.json"
    proc = subprocess.run([sys.executable, "benchmarks/long_run.py", "--steps", "2000", "--batch-size", "8",
                           "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert report["status"] == "done" and report["steps"] == 2000
    assert report["all_losses_finite"]
    assert abs(report["rss_growth"]) <= 0.05, report["rss_mb"]
