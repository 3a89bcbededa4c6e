"""One process per benchmark case: spawning, the stdin protocol, peak RSS, and the LoRA training and
generation workers that ``bench_gpt2_small.py``, ``bench_llm.py`` and ``bench_memory.py`` share.

A driver starts ``python SCRIPT --worker CASE_JSON`` (``spawn``) with ``THREADS`` threads; the script
hands the case to its worker, which loads its model and then either prints one JSON line and exits
(``run_once``) or answers the driver's commands (``serve``): "N" runs N timed steps, "done" reports
the memory facts. Sides that are compared take their steps in turn (``interleaved``), round after
round, so a noisy minute slows both alike; each side's peak RSS is its own process's VmHWM.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
THREADS = 2
PROMPT_TOKENS, NEW_TOKENS = 16, 64


# ---- memory ------------------------------------------------------------------------------------
def status_mb(field):
    """A field of /proc/self/status ("VmHWM", "VmRSS"), MiB; NaN where the kernel has no such field."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def window_peak_mb():
    """Peak RSS since the last ``reset_window_peak`` (VmHWM)."""
    return status_mb("VmHWM")


def rss_mb():
    """This process's resident memory now (VmRSS), MiB."""
    return status_mb("VmRSS")


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


# ---- the worker's side ---------------------------------------------------------------------------
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
            start, cpu = time.perf_counter(), time.process_time()
            step()
            times.append(1000 * (time.perf_counter() - start))
            info.setdefault("step_cpu_ms", []).append(1000 * (time.process_time() - cpu))  # all threads' CPU
        print(json.dumps(times), flush=True)


def run_worker(workers, case_json):
    """In the spawned process: hand the case to the worker its "kind" names."""
    case = json.loads(case_json)
    return workers[case["kind"]](case)


def ours_lora_train(load, target_modules, r, batch, checkpointing=False):
    """lora_np: ``load()`` the model (after ``tune_host_allocator``, as the CLI does), LoRA r with
    α = 2r on ``target_modules``, AdamW on the adapters, gradient checkpointing if asked; serve timed
    steps on ``batch`` = (x, y)."""
    import lora_np
    from lora_np.optim import AdamW
    from lora_np.parallel import tune_host_allocator
    tune_host_allocator()
    model = load().train()
    loaded = peak_rss_mb()
    lora_np.add_lora(model, lora_np.LoraConfig(r=r, lora_alpha=2 * r, target_modules=target_modules))
    if checkpointing:
        model.gradient_checkpointing_enable()
    opt = AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    x, y = batch

    def step():
        _, loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad()

    serve(step, {"rss_after_load_mb": loaded})


def peft_lora_train(load, lora_kwargs, batch):
    """transformers + PEFT: ``load()`` the model on THREADS threads, ``LoraConfig(**lora_kwargs)``
    without dropout, torch's AdamW; serve timed steps (cross-entropy on the logits) on ``batch``."""
    import torch
    import torch.nn.functional as F
    from peft import LoraConfig, get_peft_model
    torch.set_num_threads(THREADS)
    model = load()
    loaded = peak_rss_mb()
    model = get_peft_model(model, LoraConfig(**lora_kwargs, lora_dropout=0.0, task_type="CAUSAL_LM"))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    x, y = (torch.tensor(a) for a in batch)

    def step():
        logits = model(input_ids=x, use_cache=False).logits
        F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    serve(step, {"rss_after_load_mb": loaded})


def _timed(fn):
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - start, time.process_time() - cpu


def timed_generation(generate, repeats, new_tokens=NEW_TOKENS):
    """tokens/s of ``generate(n)`` for n = new_tokens (median of ``repeats``, wall and per CPU second:
    all threads' CPU time, less at the mercy of a loaded machine), the prefill (the prompt and one
    token: ``generate(1)``, median of 3, ms) and the peak RSS."""
    generate(8)  # warm-up
    runs, prefill = [], []
    for _ in range(repeats):
        out, wall, cpu = _timed(lambda: generate(new_tokens))
        runs.append((wall, cpu))
        assert out.shape[1] == PROMPT_TOKENS + new_tokens, out.shape
    for _ in range(3):
        prefill.append(_timed(lambda: generate(1))[1:])
    wall, cpu = (float(np.median([r[i] for r in runs])) for i in (0, 1))
    return {"tokens_per_s": new_tokens / wall, "tokens_per_cpu_s": new_tokens / cpu,
            "prefill_ms": 1000 * float(np.median([p[0] for p in prefill])),
            "prefill_cpu_ms": 1000 * float(np.median([p[1] for p in prefill])), "peak_rss_mb": peak_rss_mb()}


def ours_greedy(load, prompt, repeats, new_tokens=NEW_TOKENS, sample=False):
    """lora_np: greedy (or, with ``sample``, top-50 sampled) generation with the KV cache; prints
    tokens/s, prefill time and peak RSS."""
    import lora_np
    from lora_np.parallel import tune_host_allocator
    tune_host_allocator()
    model = load()
    lora_np.manual_seed(0)
    settings = dict(temperature=1.0, top_k=50) if sample else dict(temperature=0)
    print(json.dumps(timed_generation(lambda n: model.generate(prompt, n, **settings), repeats, new_tokens)))


def hf_greedy(load, prompt, repeats, new_tokens=NEW_TOKENS, sample=False):
    """transformers: ``model.generate`` with its cache on THREADS threads, greedy or (``sample``) top-50
    sampled; prints tokens/s, prefill time and peak RSS."""
    import torch
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    model = load().eval()
    prompt = torch.tensor(prompt)
    settings = dict(do_sample=True, temperature=1.0, top_k=50, top_p=1.0) if sample else dict(do_sample=False)

    def generate(n):
        with torch.no_grad():
            return model.generate(prompt, max_new_tokens=n, min_new_tokens=n, use_cache=True, pad_token_id=0,
                                  attention_mask=torch.ones_like(prompt), **settings)

    print(json.dumps(timed_generation(generate, repeats, new_tokens)))


# ---- the driver's side ---------------------------------------------------------------------------
def spawn(script, case):
    """``python script --worker CASE_JSON``, THREADS threads, pipes for the stdin protocol. A case
    with a "root" imports that checkout's lora_np (a baseline: an earlier revision, same harness)."""
    env = dict(os.environ, PYTHONPATH=str(case.get("root", ROOT)), LORA_NP_NUM_THREADS=str(THREADS),
               OMP_NUM_THREADS=str(THREADS), OPENBLAS_NUM_THREADS=str(THREADS), MKL_NUM_THREADS=str(THREADS),
               TOKENIZERS_PARALLELISM="false",
               OMP_WAIT_POLICY="PASSIVE")  # PyTorch's OpenMP threads sleep between ops instead of spinning
    return subprocess.Popen([sys.executable, str(script), "--worker", json.dumps(case)], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def ask(proc, command):
    proc.stdin.write(command + "\n")
    proc.stdin.flush()
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"worker failed: {proc.stderr.read().strip().splitlines()[-1:]}")
    return json.loads(line)


def run_once(script, case, timeout=600):
    """One worker that prints one JSON line and exits: that line, parsed."""
    proc = spawn(script, case)
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode:
        raise RuntimeError(f"{case['kind']} failed: {err.strip().splitlines()[-3:]}")
    return json.loads(out.strip().splitlines()[-1])


def interleaved(script, sides, warmup, steps):
    """Workers (``sides``: name -> case) started together, stepping in turn; median ms and the
    memory facts of each."""
    procs = {name: spawn(script, case) for name, case in sides.items()}
    times = {name: [] for name in procs}
    for proc in procs.values():
        ask(proc, str(warmup))
    for _ in range(steps):
        for name, proc in procs.items():
            time.sleep(0.2)  # let the other side's idle threads stop spinning
            times[name] += ask(proc, "1")
    results = {}
    for name, proc in procs.items():
        results[name] = {"ms": float(np.median(times[name])), "times_ms": times[name], **ask(proc, "done")}
        proc.wait(timeout=120)
    return results


def train_pair(script, case, warmup, steps):
    """``ours_train`` and ``peft_train`` on the same case, stepping in turn."""
    return interleaved(script, {kind: {**case, "kind": kind} for kind in ("ours_train", "peft_train")}, warmup, steps)


def finish(args, results, start, report):
    """After the cases: the load average; then, for a full run (no --only), ``report(results, seconds)``
    printed and written to ``args.out``.md beside the raw numbers in ``args.out``.json."""
    results["load"].append(round(os.getloadavg()[0], 1))
    if args.only:
        return
    text = report(results, time.perf_counter() - start)
    print(text)
    Path(args.out + ".md").write_text(text, encoding="utf-8")
    Path(args.out + ".json").write_text(json.dumps(results, indent=1), encoding="utf-8")


def comparison_arguments(description, only, out, steps, warmup, repeats):
    """The options of a side-by-side benchmark, with its defaults: --steps, --warmup, --repeats,
    --only (choices ``only``), --out (a path stem), and the hidden --worker."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--steps", type=int, default=steps, help="timed steps per training case")
    parser.add_argument("--warmup", type=int, default=warmup)
    parser.add_argument("--repeats", type=int, default=repeats, help="timed generations per side")
    parser.add_argument("--only", choices=only, action="append",
                        help="run only these cases (repeatable); the results file is written only for a full run")
    parser.add_argument("--out", default=str(out), help="path stem for .md and .json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser
