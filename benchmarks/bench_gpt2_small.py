"""GPT-2 small, LoRA r=8 on c_attn: lora_np against transformers + PEFT on the same checkpoint and tokens.

One random checkpoint at GPT-2 small's shape (124M parameters, vocabulary 50,257, 12 layers × 768,
no dropout) is written once by ``transformers``' ``save_pretrained`` and loaded by both sides
(``lora_np.load_gpt2``; ``GPT2LMHeadModel.from_pretrained``). Every case runs in its own process
(so its peak RSS is its own) with 2 threads; the two sides of a training case take their steps in
turn, round after round, so a noisy minute slows both alike.

* LoRA step (forward, backward, AdamW on the adapters), float32: T 128 × B 4 and T 512 × B 2;
  median step time, peak RSS of the process (loading included) and of the training steps alone.
* Greedy generation with a KV cache on the base model: tokens/s against ``model.generate``.

    python benchmarks/bench_gpt2_small.py            # ~4 minutes; writes benchmarks/results_gpt2_small.md
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VOCAB, LAYERS, WIDTH, HEADS, CONTEXT = 50257, 12, 768, 12, 1024
LORA_R, THREADS = 8, 2
TRAIN_SHAPES = {"T128_B4": (128, 4), "T512_B2": (512, 2)}
PROMPT_TOKENS, NEW_TOKENS = 16, 64


def make_checkpoint(path):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=VOCAB, n_positions=CONTEXT, n_embd=WIDTH, n_layer=LAYERS, n_head=HEADS,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    GPT2LMHeadModel(config).save_pretrained(path)


def tokens(t, b, seed=0):
    ids = np.random.default_rng(seed).integers(0, VOCAB, size=(b, t + 1))
    return ids[:, :-1], ids[:, 1:]


# ---- memory ------------------------------------------------------------------------------------
def peak_rss_mb():
    """This process's peak RSS. Linux: VmHWM, which starts afresh at exec; ru_maxrss would carry over
    the peak of the driver that spawned us (it holds torch and wrote the checkpoint)."""
    try:
        return window_peak_mb()
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_window_peak():
    """Start a new peak-RSS window (Linux: writing 5 to clear_refs resets VmHWM)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def window_peak_mb():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ---- workers (each in its own process) ----------------------------------------------------------
def serve(step, info):
    """stdin "N": run N timed steps, answer their times (ms); "done": answer the memory facts, exit."""
    reset_window_peak()
    for line in sys.stdin:
        if line.strip() == "done":
            window = window_peak_mb()  # since reset_window_peak; the load's peak is in info
            print(json.dumps({"peak_rss_mb": max(window, info.get("rss_after_load_mb", 0.0)),
                              "train_peak_rss_mb": window, **info}), flush=True)
            return
        times = []
        for _ in range(int(line)):
            start = time.perf_counter()
            step()
            times.append(1000 * (time.perf_counter() - start))
        print(json.dumps(times), flush=True)


def ours_train(case):
    import lora_np
    from lora_np.optim import AdamW
    from lora_np.parallel import tune_host_allocator
    tune_host_allocator()  # as the CLI does
    model = lora_np.load_gpt2(case["checkpoint"]).train()
    loaded = peak_rss_mb()
    lora_np.add_lora(model, lora_np.LoraConfig(r=LORA_R, lora_alpha=2 * LORA_R, target_modules=["c_attn"]))
    opt = AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    x, y = tokens(*case["shape"])

    def step():
        _, loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad()

    serve(step, {"rss_after_load_mb": loaded})


def peft_train(case):
    import torch
    import torch.nn.functional as F
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2LMHeadModel
    torch.set_num_threads(THREADS)
    model = GPT2LMHeadModel.from_pretrained(case["checkpoint"])
    loaded = peak_rss_mb()
    model = get_peft_model(model, LoraConfig(r=LORA_R, lora_alpha=2 * LORA_R, target_modules=["c_attn"],
                                             lora_dropout=0.0, fan_in_fan_out=True, task_type="CAUSAL_LM"))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    x, y = (torch.tensor(a) for a in tokens(*case["shape"]))

    def step():
        logits = model(input_ids=x, use_cache=False).logits
        F.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    serve(step, {"rss_after_load_mb": loaded})


def timed_generation(generate, repeats):
    generate(8)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = generate(NEW_TOKENS)
        times.append(time.perf_counter() - start)
        assert out.shape[1] == PROMPT_TOKENS + NEW_TOKENS, out.shape
    return {"tokens_per_s": NEW_TOKENS / float(np.median(times)), "peak_rss_mb": peak_rss_mb()}


def ours_generate(case):
    import lora_np
    from lora_np.parallel import tune_host_allocator
    tune_host_allocator()
    model = lora_np.load_gpt2(case["checkpoint"])
    prompt = tokens(PROMPT_TOKENS, 1)[0]
    print(json.dumps(timed_generation(lambda n: model.generate(prompt, n, temperature=0), case["repeats"])))


def hf_generate(case):
    import torch
    from transformers import GPT2LMHeadModel
    torch.set_num_threads(THREADS)
    model = GPT2LMHeadModel.from_pretrained(case["checkpoint"]).eval()
    prompt = torch.tensor(tokens(PROMPT_TOKENS, 1)[0])

    def generate(n):
        with torch.no_grad():
            return model.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False, use_cache=True,
                                  pad_token_id=0, attention_mask=torch.ones_like(prompt))

    print(json.dumps(timed_generation(generate, case["repeats"])))


WORKERS = {"ours_train": ours_train, "peft_train": peft_train, "ours_generate": ours_generate,
           "hf_generate": hf_generate}


# ---- the driver ---------------------------------------------------------------------------------
def spawn(case):
    env = dict(os.environ, PYTHONPATH=str(ROOT), LORA_NP_NUM_THREADS=str(THREADS), OMP_NUM_THREADS=str(THREADS),
               OPENBLAS_NUM_THREADS=str(THREADS), MKL_NUM_THREADS=str(THREADS), TOKENIZERS_PARALLELISM="false")
    script = case.get("script", __file__)  # another benchmark's workers: its own file (bench_llm.py)
    return subprocess.Popen([sys.executable, script, "--worker", json.dumps(case)], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def ask(proc, command):
    proc.stdin.write(command + "\n")
    proc.stdin.flush()
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"worker failed: {proc.stderr.read().strip().splitlines()[-1:]}")
    return json.loads(line)


def train_pair(checkpoint, shape, warmup, steps, **case):
    """Both sides of one training case, stepping in turn; median ms and memory for each. ``case``:
    more fields for the workers (e.g. the script that holds them)."""
    procs = {kind: spawn({"kind": kind, "checkpoint": checkpoint, "shape": shape, **case})
             for kind in ("ours_train", "peft_train")}
    times = {kind: [] for kind in procs}
    for proc in procs.values():
        ask(proc, str(warmup))
    for _ in range(steps):
        for kind, proc in procs.items():
            time.sleep(0.2)  # let the other side's idle threads stop spinning
            times[kind] += ask(proc, "1")
    results = {}
    for kind, proc in procs.items():
        results[kind] = {"ms": float(np.median(times[kind])), "times_ms": times[kind], **ask(proc, "done")}
        proc.wait(timeout=60)
    return results


def run_once(case):
    proc = spawn(case)
    out, err = proc.communicate(timeout=600)
    if proc.returncode:
        raise RuntimeError(f"{case['kind']} failed: {err.strip().splitlines()[-1:]}")
    return json.loads(out.strip().splitlines()[-1])


def report(results, seconds):
    rows = []
    for name, (t, b) in TRAIN_SHAPES.items():
        ours, peft = results[name]["ours_train"], results[name]["peft_train"]
        rows.append((f"LoRA step, T {t} × B {b} (ms, median)", ours["ms"], peft["ms"], "≤ 0.90", ".0f"))
        rows.append((f"peak RSS, T {t} × B {b} (MiB, whole process)", ours["peak_rss_mb"], peft["peak_rss_mb"],
                     "≤ 0.45", ".0f"))
        rows.append((f"peak RSS of the training steps, T {t} × B {b} (MiB)", ours["train_peak_rss_mb"],
                     peft["train_peak_rss_mb"], "", ".0f"))
    ours, hf = results["generate"]["ours_generate"], results["generate"]["hf_generate"]
    rows.append((f"greedy generation, {PROMPT_TOKENS}-token prompt + {NEW_TOKENS} (tokens/s)",
                 ours["tokens_per_s"], hf["tokens_per_s"], "≥ 1.0", ".1f"))
    lines = ["| | lora_np | transformers + PEFT | ratio | target |", "|---|---|---|---|---|"]
    for label, a, b, target, fmt in rows:
        lines.append(f"| {label} | {a:,{fmt}} | {b:,{fmt}} | {a / b:.2f} | {target} |")
    import torch
    sys.path.insert(0, str(HERE))
    from bench_train import machine_description
    machine = f"{machine_description()}, torch {torch.__version__}; {THREADS} threads per case"
    return "\n".join([
        "# GPT-2 small: lora_np vs transformers + PEFT",
        "",
        f"Random weights at GPT-2 small's shape ({LAYERS} layers × {WIDTH}, vocabulary {VOCAB:,}, 124M parameters),",
        f"float32, LoRA r={LORA_R} (α={2 * LORA_R}) on c_attn, AdamW; one checkpoint written by transformers and "
        "loaded by both; the same tokens.",
        f"Machine: {machine}. One run ({seconds:.0f} s), load average {results['load']} before and after; "
        "on a shared machine expect ±10-20%, and more when the load exceeds the 2 threads.",
        "",
        *lines,
        "",
        "Command: `python benchmarks/bench_gpt2_small.py`",
        "",
    ])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="timed steps per training case")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timed generations per side")
    parser.add_argument("--only", choices=[*TRAIN_SHAPES, "generate"], action="append",
                        help="run only these cases (repeatable); the results file is written only for a full run")
    parser.add_argument("--out", default=str(HERE / "results_gpt2_small"), help="path stem for .md and .json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        case = json.loads(args.worker)
        WORKERS[case["kind"]](case)
        return
    start = time.perf_counter()
    results = {"load": [round(os.getloadavg()[0], 1)]}
    with tempfile.TemporaryDirectory() as tmp:
        make_checkpoint(tmp)
        for name, shape in TRAIN_SHAPES.items():
            if not args.only or name in args.only:
                results[name] = train_pair(tmp, shape, args.warmup, args.steps)
                print(name, json.dumps({k: {m: v[m] for m in ("ms", "peak_rss_mb", "train_peak_rss_mb")}
                                         for k, v in results[name].items()}), flush=True)
        if not args.only or "generate" in args.only:
            results["generate"] = {kind: run_once({"kind": kind, "checkpoint": tmp, "repeats": args.repeats})
                                   for kind in ("ours_generate", "hf_generate")}
            print("generate", json.dumps(results["generate"]), flush=True)
    results["load"].append(round(os.getloadavg()[0], 1))
    if args.only:
        return
    text = report(results, time.perf_counter() - start)
    print(text)
    Path(args.out + ".md").write_text(text, encoding="utf-8")
    Path(args.out + ".json").write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
