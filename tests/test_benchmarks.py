"""Smoke test of the benchmark harness on a tiny config: it runs, interleaves its cases, writes its
reports. It asserts no speed: speed targets live in benchmarks/ and the issue notes."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_train_runs_on_a_tiny_config(tmp_path, backend_name):
    out = tmp_path / "bench"
    proc = subprocess.run([sys.executable, "benchmarks/bench_train.py", "--configs", "XS", "--torch", "--steps", "2",
                           "--warmup", "1", "--out", str(out), "--backend", backend_name],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(out.with_suffix(".json").read_text())
    row = results["configs"]["XS"]
    for case in ("ours_full", "ours_lora", "torch_full", "hf_full", "hf_peft_lora"):
        assert row[case]["ms"] > 0 and len(row[case]["times"]) == 2, (case, row[case])
    assert row["ours_lora"]["peak_rss_mb"] > 0
    assert set(results["memory_768"]) == {"full", "lora"}
    assert set(results["generation"]) == {"base", "merged_adapter", "unmerged_adapter"}
    assert "ours LoRA / ours full" in out.with_suffix(".md").read_text()
