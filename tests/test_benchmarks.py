"""Smoke test of the benchmark harness on a tiny config: it runs, interleaves its cases, writes its
reports. It asserts no speed: speed targets live in benchmarks/ and the issue notes."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

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


def test_bench_llm_q6_k_blocks_decode_to_their_values():
    """bench_llm's Q6_K encoder (the --scale GGUF base's tied table): gguf.quants.Q6_K (llama.cpp's own
    decoder) gives back every value within half a step d·scale of its sub-block of 16 where it is not
    clipped (x / step in [-32.5, 31.5]; the rounded int8 scale can leave a sub-block's largest value past the codes,
    as in llama.cpp), 2.5% of the values' norm in all, an all-zero block as zeros, and a table of these
    blocks widens to the same values through lora_np's FrozenTable."""
    gguf = pytest.importorskip("gguf")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_llm
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((500, 256)) * 0.02).astype(np.float32)
    x[0], x[1, :16] = 0, 0
    blocks = bench_llm.q6_k_blocks(x)
    assert blocks.shape == (500, 210) and blocks.dtype == np.uint8
    y = gguf.quants.Q6_K.dequantize_blocks(blocks)
    step = (blocks[:, 208:].copy().view(np.float16).astype(np.float32) * blocks[:, 192:208].view(np.int8))
    err, step = np.abs(y - x).reshape(500, 16, 16), step[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        codes = x.reshape(500, 16, 16) / step  # the code before rounding, -32 .. 31 with the sign of step
    inside = (step == 0) | ((codes >= -32.5) & (codes <= 31.5))
    half_step = np.broadcast_to(np.abs(step) / 2 * (1 + 1e-5) + 1e-9, err.shape)
    assert inside.mean() > 0.99 and np.all(err[inside] <= half_step[inside])
    assert np.all(y[0] == 0) and np.all(y[1, :16] == 0)
    assert np.linalg.norm(y - x) < 0.025 * np.linalg.norm(x)
    table = bench_llm.random_table((300, 512), np.random.default_rng(1), "Q6_K", rows=128)
    again = bench_llm.random_table((300, 512), np.random.default_rng(1), "bf16", rows=128).dequantize()
    np.testing.assert_array_equal(table.dequantize(), gguf.quants.Q6_K.dequantize_blocks(
        table.store.codes.reshape(-1, 210)).reshape(300, 512))
    assert np.linalg.norm(table.dequantize() - again) < 0.025 * np.linalg.norm(again)
