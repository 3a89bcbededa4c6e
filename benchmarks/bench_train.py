"""Training-step benchmark: lora_np (full and LoRA) side by side with PyTorch eager and HF + PEFT.

    python benchmarks/bench_train.py [--configs S,M,L] [--backend numpy|cupy] [--torch] [--steps 10]
    python benchmarks/bench_train.py --gemm [--configs S,M]    # the GEMMs alone: how each split runs

Every case runs in its own process (so peak RSS is its own) and times a full training step,
forward + backward + AdamW, as the median of --steps steps after --warmup steps. The cases of a
config run interleaved, one step each in turn, so drifts of a shared machine hit them alike. Also measured:
peak memory of LoRA vs full fine-tuning at n_embd 768 (6 layers, T 64, B 2) and generation
tokens/s of the base, the merged-adapter and the unmerged-adapter model. Writes
benchmarks/results.json and benchmarks/results.md. Measures only: no targets are asserted here.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONFIGS = {  # name: (n_embd, n_layer, n_head, T, B)
    "XS": (32, 2, 2, 16, 4),
    "S": (128, 4, 4, 128, 16),
    "M": (256, 6, 8, 128, 16),
    "L": (512, 8, 8, 256, 8),
}
VOCAB, LORA_R = 128, 8
MEMORY_CONFIG = (768, 6, 12, 64, 2)


def step_flops(n_embd, n_layer, n_head, t, b, lora):
    """Multiply-add FLOPs one training step performs (2 per multiply-add).

    Forward per layer: the four Linear layers (24·N·C²) and attention's two batched products
    (4·B·T²·C); the tied LM head 2·N·C·V. Full fine-tuning's backward is twice the forward (dX and
    dW); with LoRA the frozen Linear layers and LM head need dX only, attention still needs both,
    and the adapters add a few thin products.
    """
    n, c = t * b, n_embd
    linear = 24 * n * c * c * n_layer
    attention = 4 * b * t * t * c * n_layer
    head = 2 * n * c * VOCAB
    if not lora:
        return 3 * (linear + attention + head)
    adapters = n_layer * 2 * n * LORA_R * (c + 3 * c) * 3
    return 2 * (linear + head) + 3 * attention + adapters


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _serve(step, sync=lambda: None, extra=None):
    """Worker loop: a line "N" on stdin runs N timed steps and answers their times (ms) as JSON;
    "done" answers the peak RSS and exits. The parent interleaves the cases round by round, so a
    slow minute of a noisy machine slows every case alike. Each step's CPU time (all threads of
    the process) is answered too: on a machine shared with other work it measures the work done,
    where the wall time also measures the waits for a core."""
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "done":
            print(json.dumps({"peak_rss_mb": _peak_rss_mb(), **(extra() if extra else {})}), flush=True)
            return
        times, cpu = [], []
        for _ in range(int(cmd)):
            t0, c0 = time.perf_counter(), time.process_time()
            step()
            sync()
            times.append(1000 * (time.perf_counter() - t0))
            cpu.append(1000 * (time.process_time() - c0))
        print(json.dumps({"ms": times, "cpu_ms": cpu}), flush=True)


def _batch(t, b, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, VOCAB, size=(b, t)), rng.integers(0, VOCAB, size=(b, t))


def run_ours(case):
    import lora_np
    from lora_np import GPT, GPTConfig, LoraConfig, add_lora, backend
    from lora_np.optim import AdamW
    from lora_np.parallel import tune_host_allocator
    tune_host_allocator()  # opt-in, as the CLI does: freed activation buffers are reused, not unmapped
    lora_np.set_backend(case["backend"])
    c, layers, heads, t, b = case["shape"]
    base_rss = _peak_rss_mb()
    lora_np.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=VOCAB, block_size=t, n_layer=layers, n_head=heads, n_embd=c))
    if case["lora"]:
        add_lora(model, LoraConfig(r=LORA_R, lora_alpha=2 * LORA_R, target_modules=["c_attn"]))
    opt = AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    x, y = _batch(t, b)

    def step():
        _, loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad()

    _serve(step, backend.synchronize, lambda: {"rss_before_model_mb": base_rss,
                                               "gpu_pool_mb": backend.device_memory_in_use() / 2**20})


def run_torch_eager(case):
    import torch
    sys.path.insert(0, str(HERE))
    from torch_gpt import TorchGPT
    torch.manual_seed(0)
    c, layers, heads, t, b = case["shape"]
    base_rss = _peak_rss_mb()
    model = TorchGPT(VOCAB, t, layers, heads, c)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, y = (torch.tensor(a) for a in _batch(t, b))

    def step():
        model(x, y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    _serve(step, extra=lambda: {"rss_before_model_mb": base_rss, "torch_threads": torch.get_num_threads()})


def run_hf_peft(case):
    import torch
    import torch.nn.functional as F
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    c, layers, heads, t, b = case["shape"]
    base_rss = _peak_rss_mb()
    cfg = GPT2Config(vocab_size=VOCAB, n_positions=t, n_embd=c, n_layer=layers, n_head=heads, resid_pdrop=0.0,
                     embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(cfg)
    if case["lora"]:
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(model, LoraConfig(r=LORA_R, lora_alpha=2 * LORA_R, target_modules=["c_attn"],
                                                 fan_in_fan_out=True, task_type="CAUSAL_LM"))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    x, y = (torch.tensor(a) for a in _batch(t, b))

    def step():
        logits = model(input_ids=x, use_cache=False).logits
        F.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    _serve(step, extra=lambda: {"rss_before_model_mb": base_rss})


def run_generation(case):
    """Tokens/s of greedy generation (KV cache) for the base, the merged and the unmerged adapter,
    timed in turn, round after round, so that the three see the same machine."""
    import lora_np
    from lora_np import GPT, GPTConfig, LoraConfig, add_lora, merge_and_unload
    from lora_np.parallel import tune_host_allocator
    tune_host_allocator()
    lora_np.set_backend(case["backend"])
    c, layers, heads, t, _ = case["shape"]

    def build(adapter, merged):
        lora_np.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=VOCAB, block_size=t, n_layer=layers, n_head=heads, n_embd=c))
        if adapter:
            add_lora(model, LoraConfig(r=LORA_R, lora_alpha=2 * LORA_R, target_modules=["c_attn"]))
            for p in model.parameters():
                if p.requires_grad:
                    p.data = p.data + 0.01  # a non-zero adapter, as after training
            if merged:
                merge_and_unload(model)
        return model

    models = {"base": build(False, False), "unmerged_adapter": build(True, False), "merged_adapter": build(True, True)}
    prompt = _batch(max(1, t // 8), 1)[0]
    n_new = t - prompt.shape[1]
    times = {name: [] for name in models}
    for m in models.values():
        m.generate(prompt, 8, temperature=0)  # warm-up
    for _ in range(case["repeats"]):
        for name, m in models.items():
            t0 = time.perf_counter()
            m.generate(prompt, n_new, temperature=0)
            times[name].append(time.perf_counter() - t0)
    print(json.dumps({name: n_new / float(np.median(v)) for name, v in times.items()}), flush=True)


def gemm_shapes(n_embd, n_layer, n_head, t, b):
    """The (n, k, m) of a step's Linear GEMMs, forward (X W), dX (G Wᵀ) and dW (Xᵀ G), for c_attn,
    attn.c_proj, mlp.c_fc and mlp.c_proj, and the LM head's Z = H Wᵀ."""
    n, c = t * b, n_embd
    shapes = []
    for k, m in ((c, 3 * c), (c, c), (c, 4 * c), (4 * c, c)):
        shapes += [(n, k, m), (n, m, k), (k, n, m)]
    return shapes + [(n, c, VOCAB)]


def run_gemm_cases(shapes, repeats):
    """Each GEMM shape as one BLAS call on one thread, as one call on BLAS's own threads, in
    lora_np's row and column blocks (BLAS on one thread), and with torch at the same thread count;
    the cases interleaved round by round, median GFLOP/s of each."""
    import torch
    from threadpoolctl import threadpool_limits
    from lora_np import parallel
    threads = parallel.thread_count()
    torch.set_num_threads(threads)
    rows = []
    for n, k, m in shapes:
        rng = np.random.default_rng(0)
        a, b = rng.standard_normal((n, k), dtype=np.float32), rng.standard_normal((k, m), dtype=np.float32)
        y = np.empty((n, m), np.float32)
        ta, tb, ty = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(y)

        def blas(n_threads):
            with threadpool_limits(n_threads, user_api="blas"):
                np.matmul(a, b, out=y)

        def ours(split):
            with parallel.forced_threads(threads):
                parallel._run_blocks(*_gemm_blocks(split, y, a, b, threads))

        cases = {"blas 1 thread": lambda: blas(1), f"blas {threads} threads": lambda: blas(threads),
                 "our rows": lambda: ours("rows"), "our columns": lambda: ours("columns"),
                 "lora_np gemm": lambda: parallel.gemm(y, ((a, b),)),
                 f"torch {threads} threads": lambda: torch.matmul(ta, tb, out=ty)}
        times = {name: [] for name in cases}
        for _ in range(repeats):
            for name, fn in cases.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        rows.append({"shape": [n, k, m], "split": parallel.gemm_split(n, k, m),
                     **{name: 2 * n * k * m / float(np.median(v[1:])) / 1e9 for name, v in times.items()}})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def _gemm_blocks(split, y, a, b, threads):
    """(edges, body) of a GEMM in ``threads`` row or column blocks, as parallel.gemm runs them."""
    from lora_np import parallel
    size = y.shape[0] if split == "rows" else y.shape[1]
    edges = [size * i // threads for i in range(threads + 1)]
    if split == "rows":
        return edges, lambda i, lo, hi: parallel.gemm_kernel(y[lo:hi], [(a[lo:hi], b)], None)
    return edges, lambda i, lo, hi: parallel.gemm_kernel(y[:, lo:hi], [(a, b[:, lo:hi])], None)


def gemm_report(results):
    lines = [f"GEMMs alone, {results['machine']}; GFLOP/s, median of {results['repeats']} interleaved rounds; "
             f"load average at the start {results['load']}.", "",
             "| config | (n, k) @ (k, m) | lora_np's rule | BLAS 1 thread | BLAS's threads | our rows | our columns | "
             "lora_np gemm | torch |", "|---|---|---|---|---|---|---|---|---|"]
    for name, rows in results["gemm"].items():
        for r in rows:
            v = list(r.values())[2:]
            n, k, m = r["shape"]
            lines.append(f"| {name} | ({n}, {k}) @ ({k}, {m}) | {r['split'] or 'one call'} | "
                         + " | ".join(f"{x:.0f}" for x in v) + " |")
    return "\n".join(lines)


WORKERS = {"ours": run_ours, "torch": run_torch_eager, "hf_peft": run_hf_peft, "generate": run_generation}


class Worker:
    """One case in its own interpreter (so its peak RSS is its own), driven over stdin/stdout."""

    def __init__(self, case):
        root = Path(case.get("root", ROOT))  # a baseline case imports an earlier checkout's lora_np
        env = dict(os.environ, PYTHONPATH=str(root))
        script = Path(__file__).resolve()          # ... in this worker: one harness for both
        self.proc = subprocess.Popen([sys.executable, str(script), "--worker", json.dumps(case)], env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.times, self.cpu, self.error = [], [], None

    def ask(self, command):
        if self.error:
            return None
        try:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except (BrokenPipeError, OSError):
            line = ""
        if not line:
            err = self.proc.stderr.read().strip().splitlines()
            self.error = err[-1] if err else f"worker exited ({self.proc.poll()})"
            return None
        return json.loads(line)

    def close(self):
        result = self.ask("done") or {}
        self.proc.wait(timeout=60)
        return result


def run_interleaved(cases, warmup, steps, per_round=1, pause=0.2):
    """Warm every case up, then run ``per_round`` steps of each case in turn until each has
    ``steps`` timed steps. Returns label -> {"ms": median, "times": [...], peak RSS, ...} or error."""
    workers = {label: Worker(case) for label, case in cases.items()}
    for w in workers.values():
        w.ask(str(warmup))
    rounds = -(-steps // per_round)
    for _ in range(rounds):
        for w in workers.values():
            time.sleep(pause)  # let the last case's idle BLAS/OpenMP threads stop spinning
            got = w.ask(str(per_round))
            if got:
                w.times.extend(got["ms"])
                w.cpu.extend(got["cpu_ms"])
    results = {}
    for label, w in workers.items():
        extra = w.close()
        if w.error or not w.times:
            results[label] = {"error": w.error or "no timing"}
        else:
            results[label] = {"ms": float(np.median(w.times)), "times": w.times, "cpu_ms": float(np.median(w.cpu)),
                              "cpu_times": w.cpu, **extra}
    return results


def spawn_once(case):
    """A worker that prints one JSON result by itself (generation)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(case)], capture_output=True,
                          text=True, env=env, timeout=3600)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def matmul_peak_gflops(backend_name, n=2048, repeats=5):
    """The machine's float32 GEMM rate: best of ``repeats`` n×n products."""
    if backend_name == "cupy":
        import cupy as xp
        sync = xp.cuda.Stream.null.synchronize
        n = 8192
    else:
        xp, sync = np, (lambda: None)
    a = xp.asarray(np.random.default_rng(0).standard_normal((n, n), dtype=np.float32))
    b = xp.asarray(np.random.default_rng(1).standard_normal((n, n), dtype=np.float32))
    a @ b
    sync()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def machine_description():
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import numpy
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, NumPy {numpy.__version__}"


def load_average():
    """The 1-, 5- and 15-minute load averages, as ``uptime`` prints them."""
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def thread_settings():
    """The thread counts every case runs with: lora_np's (LORA_NP_NUM_THREADS, else the cores it
    may use) and the environment's OpenMP / BLAS limits (torch reads OMP_NUM_THREADS)."""
    sys.path.insert(0, str(ROOT))
    from lora_np import parallel
    env = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ}
    return {"lora_np": parallel.thread_count(), **env}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default="S,M,L")
    p.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    p.add_argument("--torch", action="store_true", help="also run PyTorch eager and HF + PEFT (dev dependencies)")
    p.add_argument("--steps", type=int, default=12, help="timed steps per case (interleaved round by round)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--skip-memory", action="store_true", help="skip the 768-wide memory comparison")
    p.add_argument("--skip-generation", action="store_true")
    p.add_argument("--baseline", metavar="DIR", help="an earlier checkout (e.g. `git worktree add /tmp/before REV`): "
                   "its full and LoRA steps run interleaved with ours as base_full / base_lora")
    p.add_argument("--out", default=str(HERE / "results"), help="path stem for .json and .md")
    p.add_argument("--gemm", action="store_true", help="time the configs' GEMMs alone (BLAS, our splits, torch)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        case = json.loads(args.worker)
        WORKERS[case["kind"]](case)
        return 0
    if args.gemm:
        sys.path.insert(0, str(ROOT))
        return gemm_main(args)

    names = [n.strip().upper() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        p.error(f"unknown config(s) {unknown}; choose from {', '.join(CONFIGS)}")
    peak = matmul_peak_gflops(args.backend)
    results = {"machine": machine_description(), "backend": args.backend, "matmul_peak_gflops": peak,
               "steps": args.steps, "configs": {}, "threads": thread_settings(),
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_before": load_average()}
    print(f"machine: {results['machine']}; float32 GEMM peak {peak:.0f} GFLOP/s ({args.backend})", flush=True)
    for name in names:
        shape = CONFIGS[name]
        c, layers, heads, t, b = shape
        kinds = [("ours_full", "ours", False), ("ours_lora", "ours", True)]
        if args.torch:
            kinds += [("torch_full", "torch", False), ("hf_full", "hf_peft", False), ("hf_peft_lora", "hf_peft", True)]
        if args.baseline:
            kinds += [("base_full", "ours", False), ("base_lora", "ours", True)]
        cases = {label: dict(kind=kind, shape=shape, lora=lora, backend=args.backend) for label, kind, lora in kinds}
        for label in ("base_full", "base_lora"):
            if label in cases:
                cases[label]["root"] = str(Path(args.baseline).resolve())
        row = {"shape": dict(n_embd=c, n_layer=layers, n_head=heads, T=t, B=b),
               **run_interleaved(cases, args.warmup, args.steps)}
        for label, _, lora in kinds:
            r = row[label]
            if "ms" in r:
                r.update(tokens_per_s=b * t / (r["ms"] / 1000),
                         gflops=step_flops(*shape, lora=lora) / (r["ms"] / 1000) / 1e9)
                r["peak_fraction"] = r["gflops"] / peak
            print(f"{name:>2} {label:<13} " + (f"{r['ms']:8.1f} ms/step (CPU {r['cpu_ms']:8.1f}) "
                                               f"{r['gflops']:7.1f} GFLOP/s "
                                               f"({100 * r['peak_fraction']:.0f}% of peak) peak RSS "
                                               f"{r['peak_rss_mb']:.0f} MB" if "ms" in r else r["error"]), flush=True)
        results["configs"][name] = row
        if "torch_threads" in row.get("torch_full", {}):
            results["torch_threads"] = row["torch_full"]["torch_threads"]
    if not args.skip_memory:
        mem = run_interleaved({label: dict(kind="ours", shape=MEMORY_CONFIG, lora=lora, backend=args.backend)
                               for label, lora in (("full", False), ("lora", True))}, warmup=1, steps=2)
        results["memory_768"] = mem
        if all("ms" in m for m in mem.values()):
            f, lo = (mem[k]["peak_rss_mb"] - mem[k]["rss_before_model_mb"] for k in ("full", "lora"))
            print(f"768-wide memory (peak RSS above the interpreter): full {f:.0f} MB, LoRA {lo:.0f} MB, "
                  f"ratio {lo / f:.2f}" if f > 0 else "(host RSS does not see device memory)", flush=True)
    if not args.skip_generation:
        gen_shape = CONFIGS["M"] if "M" in names else CONFIGS[names[0]]
        results["generation"] = spawn_once(dict(kind="generate", shape=gen_shape, backend=args.backend, repeats=9))
        print("generation tokens/s:", json.dumps(results["generation"]), flush=True)
    results["load_after"] = load_average()
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text(report(results) + "\n")
    print("\n" + report(results))
    return 0


def gemm_main(args):
    names = [n.strip().upper() for n in args.configs.split(",") if n.strip()]
    results = {"machine": machine_description(), "load": " ".join(f"{v:.2f}" for v in os.getloadavg()),
               "repeats": args.steps, "gemm": {name: run_gemm_cases(gemm_shapes(*CONFIGS[name]), args.steps)
                                               for name in names}}
    out = Path(args.out + "_gemm")
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text(gemm_report(results) + "\n")
    print("\n" + gemm_report(results))
    return 0


def _ratio(a, b):
    return f"{a / b:.2f}" if a and b else "—"


def report(results):
    threads = ", ".join(f"{k} {v}" for k, v in results.get("threads", {}).items())
    lines = [f"Machine: {results['machine']}; backend `{results['backend']}`; float32 GEMM peak "
             f"{results['matmul_peak_gflops']:.0f} GFLOP/s; median of {results['steps']} steps after warm-up.",
             f"Date {results.get('date', '?')}; load average before {results.get('load_before', '?')}, after "
             f"{results.get('load_after', '?')}; threads: {threads or '?'}"
             + (f"; torch {results['torch_threads']}" if results.get("torch_threads") else "") + ".", "",
             "| config | case | ms/step | CPU ms/step | tokens/s | GFLOP/s | % of peak | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|"]
    for name, row in results["configs"].items():
        for label in ("ours_full", "ours_lora", "torch_full", "hf_full", "hf_peft_lora", "base_full", "base_lora"):
            r = row.get(label)
            if r is None:
                continue
            if "ms" not in r:
                lines.append(f"| {name} | {label} | error: {r['error']} | | | | | |")
                continue
            lines.append(f"| {name} | {label} | {r['ms']:.1f} | {r.get('cpu_ms', 0):.1f} | {r['tokens_per_s']:,.0f} | "
                         f"{r['gflops']:.1f} | {100 * r['peak_fraction']:.0f}% | {r['peak_rss_mb']:.0f} |")
    lines += ["", "| config | ours LoRA / ours full | ours full / torch eager | ours LoRA / HF+PEFT LoRA | "
                  "HF+PEFT LoRA / HF full |", "|---|---|---|---|---|"]
    for name, row in results["configs"].items():
        ms = {k: row[k]["ms"] for k in row if isinstance(row[k], dict) and "ms" in row[k]}
        lines.append(f"| {name} | {_ratio(ms.get('ours_lora'), ms.get('ours_full'))} | "
                     f"{_ratio(ms.get('ours_full'), ms.get('torch_full'))} | "
                     f"{_ratio(ms.get('ours_lora'), ms.get('hf_peft_lora'))} | "
                     f"{_ratio(ms.get('hf_peft_lora'), ms.get('hf_full'))} |")
    if any("base_full" in row for row in results["configs"].values()):
        lines += ["", "| config | ours full / baseline full | ours LoRA / baseline LoRA | the same in CPU time "
                      "(full · LoRA) |", "|---|---|---|---|"]
        for name, row in results["configs"].items():
            ms = {k: row[k]["ms"] for k in row if isinstance(row[k], dict) and "ms" in row[k]}
            cpu = {k: row[k].get("cpu_ms") for k in row if isinstance(row[k], dict) and "ms" in row[k]}
            lines.append(f"| {name} | {_ratio(ms.get('ours_full'), ms.get('base_full'))} | "
                         f"{_ratio(ms.get('ours_lora'), ms.get('base_lora'))} | "
                         f"{_ratio(cpu.get('ours_full'), cpu.get('base_full'))} · "
                         f"{_ratio(cpu.get('ours_lora'), cpu.get('base_lora'))} |")
    mem = results.get("memory_768")
    if mem and all("ms" in m for m in mem.values()):
        f, lo = (mem[k]["peak_rss_mb"] - mem[k]["rss_before_model_mb"] for k in ("full", "lora"))
        if f > 0:
            lines += ["", f"Peak memory at n_embd 768, 6 layers, T 64, B 2 (peak RSS above the interpreter): "
                          f"full {f:.0f} MB, LoRA {lo:.0f} MB, LoRA / full = {lo / f:.2f}."]
    gen = results.get("generation")
    if gen and "base" in gen:
        lines += ["", f"Generation (greedy, KV cache): base {gen['base']:.0f} tokens/s, merged adapter "
                      f"{gen['merged_adapter']:.0f} ({gen['merged_adapter'] / gen['base']:.2f}× base), unmerged "
                      f"adapter {gen['unmerged_adapter']:.0f} ({gen['unmerged_adapter'] / gen['base']:.2f}× base)."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
