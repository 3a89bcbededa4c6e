"""QLoRA benchmark: memory, speed and quality of LoRA on an NF4 base against a float32 base.

    python benchmarks/bench_qlora.py [--quick] [--out benchmarks/results_qlora]

Every case runs in its own process, so its peak RSS (``resource.getrusage``) is its own:

* **load**: peak RSS while loading a GPT-2 small checkpoint (124M parameters, random weights saved
  once to a temporary directory) in float32, in NF4 (double quantization) and in int8;
* **step**: median time of a LoRA training step (r=8 on every Linear, AdamW, B=2, T=128) on the
  float32 base and on the NF4 base, cases interleaved step by step;
* **quality**: a small GPT (2 layers x 128) pretrained on the copy task, then the same LoRA
  fine-tune on the shift task on its float32 base and on its NF4 base: eval losses.

Writes ``<out>.json`` and ``<out>.md``. Measures only; no targets are asserted. Timings on a shared
machine are noisy (other processes take the cores): read them as ±10-20%.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))


def _rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- cases (each in its own process) ---------------------------------------------------------------
def case_checkpoint(path, quick):
    import lora_np as ln
    cfg = ln.GPTConfig(n_layer=2 if quick else 12, block_size=256)
    ln.save_gpt2(ln.GPT(cfg), path)
    return {}


def case_load(path, quantize):
    import lora_np as ln
    before = _rss_mb()
    t0 = time.perf_counter()
    model = ln.load_gpt2(path, quantize=None if quantize == "float32" else quantize)
    seconds = time.perf_counter() - t0
    linear_bytes = sum(m.weight.nbytes if ln.is_quantized(m) else m.weight.data.nbytes
                       for _, m in model.named_modules() if isinstance(m, ln.nn.Linear))
    return {"peak_rss_mb": _rss_mb(), "rss_before_load_mb": before, "load_s": seconds,
            "linear_weight_mb": linear_bytes / 2**20}


def _lora_model(path, quantize, quick):
    import lora_np as ln
    model = ln.load_gpt2(path, quantize=None if quantize == "float32" else quantize).train()
    ln.manual_seed(0)
    return ln.add_lora(model, ln.LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn", "c_proj", "c_fc"]))


def serve_step(path, quantize, quick):
    """Worker: each line "N" on stdin runs N LoRA steps and answers their times (ms) as JSON."""
    from lora_np.optim import AdamW
    from lora_np.parallel import tune_host_allocator
    tune_host_allocator()
    model = _lora_model(path, quantize, quick)
    opt = AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    rng = np.random.default_rng(0)
    x = rng.integers(0, model.config.vocab_size, size=(2, 33 if quick else 129))
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        times = []
        for _ in range(int(line)):
            t0 = time.perf_counter()
            _, loss = model(x[:, :-1], x[:, 1:])
            loss.backward()
            opt.step()
            opt.zero_grad()
            times.append(1000 * (time.perf_counter() - t0))
        print(json.dumps({"times": times, "peak_rss_mb": _rss_mb()}), flush=True)


def case_quality(quantize, quick):
    import lora_np as ln
    from lora_np import evaluate
    from lora_np.data import task_dataset
    from lora_np.optim import AdamW

    def fit(model, data, steps, lr, seed):
        params = [p for p in model.parameters() if p.requires_grad]
        opt, rng = AdamW(params, lr=lr), np.random.default_rng(seed)
        model.train()
        for _ in range(steps):
            x, y = data.batch("train", 16, rng)
            _, loss = model(x, y)
            loss.backward()
            opt.step()
            opt.zero_grad()
        return model

    copy, shift = task_dataset("copy", 32), task_dataset("shift", 32)
    ln.manual_seed(0)
    base = ln.GPT(ln.GPTConfig(vocab_size=copy.tokenizer.vocab_size, block_size=32, n_layer=2, n_head=4, n_embd=128))
    fit(base, copy, 60 if quick else 500, 3e-3, 0)
    if quantize != "float32":
        ln.quantize_model(base, quantize)
    before = {"copy": evaluate(base, copy)["loss"], "shift": evaluate(base, shift)["loss"]}
    ln.manual_seed(1)
    ln.add_lora(base, ln.LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn", "c_proj", "c_fc"]))
    fit(base, shift, 40 if quick else 300, 5e-3, 1)
    after = evaluate(base, shift)
    return {"base_loss_copy": before["copy"], "base_loss_shift": before["shift"], "lora_loss_shift": after["loss"],
            "lora_answer_acc_shift": after.get("answer_acc")}


# --- driver -----------------------------------------------------------------------------------------
def _run_case(*args):
    proc = subprocess.run([sys.executable, __file__, "--case", *args], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"case {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _interleaved_steps(path, quick, warmup, steps):
    workers = {}
    for q in ("float32", "nf4"):
        workers[q] = subprocess.Popen([sys.executable, __file__, "--case", "step", str(path), q, str(int(quick))],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        json.loads(workers[q].stdout.readline())
    times, peaks = {q: [] for q in workers}, {}
    for i in range(warmup + steps):
        for q, w in workers.items():
            w.stdin.write("1\n")
            w.stdin.flush()
            reply = json.loads(w.stdout.readline())
            if i >= warmup:
                times[q] += reply["times"]
            peaks[q] = reply["peak_rss_mb"]
    for w in workers.values():
        w.stdin.close()
        w.wait()
    return {q: {"ms": statistics.median(times[q]), "times": times[q], "peak_rss_mb": peaks[q]} for q in workers}


def _markdown(r):
    load, step, quality = r["load"], r["step"], r["quality"]
    f32 = load["float32"]
    lines = [f"# QLoRA benchmark ({r['machine']})", "",
             f"One run, {r['date']}; {r['note']}", "",
             "## Peak RSS while loading GPT-2 small" + (" (quick: 2 layers)" if r["quick"] else ""), "",
             "| load | peak RSS MB | RSS before load MB | Linear weights MB | load s | peak / float32 |",
             "|---|---|---|---|---|---|"]
    for q, row in load.items():
        lines.append(f"| {q} | {row['peak_rss_mb']:.0f} | {row['rss_before_load_mb']:.0f} | "
                     f"{row['linear_weight_mb']:.1f} | "
                     f"{row['load_s']:.1f} | {row['peak_rss_mb'] / f32['peak_rss_mb']:.2f} |")
    lines += ["", "## LoRA step (r=8 on c_attn, c_proj, c_fc; AdamW; B=2, T=128)", "",
              "| base | ms/step (median) | peak RSS MB | / float32 |", "|---|---|---|---|"]
    for q, row in step.items():
        lines.append(f"| {q} | {row['ms']:.0f} | {row['peak_rss_mb']:.0f} | {row['ms'] / step['float32']['ms']:.2f} |")
    lines += ["", "## Quality: the same LoRA fine-tune on a float32 and an NF4 base (2 layers x 128)", "",
              "| base | base loss on copy | base loss on shift | LoRA loss on shift | LoRA answer acc on shift |",
              "|---|---|---|---|---|"]
    for q, row in quality.items():
        lines.append(f"| {q} | {row['base_loss_copy']:.4f} | {row['base_loss_shift']:.3f} | "
                     f"{row['lora_loss_shift']:.4f} | "
                     f"{100 * (row['lora_answer_acc_shift'] or 0):.1f}% |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2-layer checkpoint, few steps (a smoke run)")
    parser.add_argument("--out", default=str(HERE / "results_qlora"))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--case", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        name, *rest = args.case
        if name == "step":
            return serve_step(Path(rest[0]), rest[1], rest[2] == "1")
        result = {"checkpoint": lambda: case_checkpoint(Path(rest[0]), rest[1] == "1"),
                  "load": lambda: case_load(Path(rest[0]), rest[1]),
                  "quality": lambda: case_quality(rest[0], rest[1] == "1")}[name]()
        print(json.dumps(result))
        return None
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gpt2-small"
        _run_case("checkpoint", str(path), str(int(args.quick)))
        load = {q: _run_case("load", str(path), q) for q in ("float32", "nf4", "int8")}
        step = _interleaved_steps(path, args.quick, 1, 2 if args.quick else args.steps)
    quality = {q: _run_case("quality", q, str(int(args.quick))) for q in ("float32", "nf4")}
    results = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                          f"Python {platform.python_version()}, NumPy {np.__version__}",
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "quick": args.quick,
               "note": "a shared machine: timings move by ±10-20% between runs.",
               "load": load, "step": step, "quality": quality, "total_s": time.time() - t0}
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    out.with_suffix(".md").write_text(_markdown(results))
    print(_markdown(results))
    print(f"total {results['total_s']:.0f} s")
    return None


if __name__ == "__main__":
    main()
