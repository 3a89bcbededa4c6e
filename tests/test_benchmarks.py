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


def test_bench_llm_gemma3_shapes_are_transformers_own():
    """bench_llm's Gemma 3 entries: transformers' Gemma3ForCausalLM (built on the meta device, no memory)
    and lora_np's config read from the same fields have the same parameter count, layer types and RoPE
    bases; 270M's count is the published model's."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_llm
    counts = {}
    for name in bench_llm.FAMILIES["gemma3"][0]:
        hf_config = Gemma3TextConfig(**bench_llm.MODELS[name]["config"])
        with torch.device("meta"):
            hf = Gemma3ForCausalLM(hf_config)
        family, ours = bench_llm.native_config(name)
        counts[name] = family.parameter_count(ours)
        assert counts[name] == sum(p.numel() for p in hf.parameters()), name
        five_to_one = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention"
                       for i in range(ours.num_hidden_layers)]
        assert ours.layer_types == hf_config.layer_types == five_to_one, (name, ours.layer_types)
        assert (ours.rope_local_base_freq, ours.rope_theta, ours.sliding_window) == (10000.0, 1e6, 512)
    assert counts["gemma3-270m"] == 268_098_176
