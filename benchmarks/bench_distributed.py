"""Data-parallel training over MPI: what two ranks buy on one machine, and what the exchange costs.

    python benchmarks/bench_distributed.py [--config M] [--steps 6] [--rounds 3]

1. Throughput on this machine: ``lora_np.train`` on one global batch per step, as 2 ranks × 1
   thread each (``mpiexec -n 2``) against 1 process × 2 threads, LoRA and full fine-tuning. Every
   case is a fresh process (or pair); the four cases run in turn, round after round, so drifts of a
   shared machine hit them alike. Reported: tokens/s from the median step (global batch B × T
   tokens per step), and on the ranks the bytes each Allreduce carried (counted at the call).
2. At GPT-2 small's shape (124M parameters): the bytes one step exchanges for LoRA r=8 on c_attn
   and for full fine-tuning (``distributed.message_bytes``, checked equal to the counted bytes in
   part 1), and one process's measured step time for each (T 128 × B 4, 2 threads).
3. On paper, from those two measurements: time per step on N machines = compute/N + a ring
   Allreduce, 2 (N−1)/N · bytes / bandwidth, at 1 Gb/s and 100 Gb/s (latency ignored).

Writes benchmarks/results_distributed.json and .md. Measures only: nothing is asserted.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
CONFIGS = {"S": (128, 4, 4, 128, 16), "M": (256, 6, 8, 128, 16)}  # n_embd, n_layer, n_head, T, B
LORA_R = 8
GPT2_SMALL = dict(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768)
BANDWIDTHS = {"1 Gb/s": 1e9 / 8, "100 Gb/s": 100e9 / 8}  # bytes per second
MACHINES = (1, 2, 4, 8, 16, 64)


class CountingComm:
    """COMM_WORLD, counting the bytes handed to Allreduce (the benchmark's own view of the wire)."""

    def __init__(self, comm):
        self.comm, self.calls, self.bytes = comm, 0, 0

    def Allreduce(self, send, recv, op):
        self.calls += 1
        self.bytes += recv.nbytes
        return self.comm.Allreduce(send, recv, op=op)

    def __getattr__(self, name):
        return getattr(self.comm, name)


def _model(config_name, mode, vocab_size):
    from lora_np import GPT, GPTConfig, LoraConfig, add_lora, manual_seed
    c, n_layer, n_head, t, _ = CONFIGS[config_name]
    manual_seed(0)
    model = GPT(GPTConfig(vocab_size=vocab_size, block_size=t, n_layer=n_layer, n_head=n_head, n_embd=c, dropout=0.0))
    return (add_lora(model, LoraConfig(r=LORA_R, target_modules=["c_attn"])) if mode == "lora"
            else model.requires_grad_(True))


def worker(config_name, mode, steps):
    """One case: ``steps`` training steps of lora_np.train; rank 0 prints a JSON line."""
    from lora_np import TrainConfig, distributed, train
    from lora_np.data import task_dataset
    _, _, _, t, b = CONFIGS[config_name]
    counter = None
    if distributed.init() > 1:
        counter = CountingComm(distributed._world[1])
        distributed._world = (distributed._world[0], counter)
    data = task_dataset("copy", block_size=t, n_train=4000, n_val=200)
    model = _model(config_name, mode, data.tokenizer.vocab_size)
    config = TrainConfig(steps=steps, batch_size=b, lr=1e-3, warmup_steps=1, eval_every=10 ** 6, eval_batches=1)
    result = train(model, data, config, quiet=True)
    params = [p for p in model.parameters() if p.requires_grad]
    if distributed.is_main():
        print(json.dumps({"ms_per_step": result.ms_per_step, "tokens_per_step": b * t,
                          "allreduce_calls": counter.calls if counter else 0,
                          "bytes_per_step": counter.bytes / max(counter.calls, 1) if counter else 0,
                          "message_bytes": distributed.message_bytes(params, 2)}), flush=True)


def _launch(case, config_name, steps):
    mode, ranks, threads = case
    env = {k: v for k, v in os.environ.items() if k not in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS")}
    env.update(PYTHONPATH=str(ROOT), LORA_NP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    command = [sys.executable, __file__, "--worker", mode, "--config", config_name, "--steps", str(steps)]
    if ranks > 1:
        command = ["mpiexec", "-n", str(ranks), *command]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode:
        raise RuntimeError(f"{case} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def throughput(config_name, steps, rounds):
    cases = [(mode, ranks, 2 // ranks) for mode in ("lora", "full") for ranks in (1, 2)]
    runs = {case: [] for case in cases}
    for _ in range(rounds):
        for case in cases:
            runs[case].append(_launch(case, config_name, steps))
    rows = []
    for (mode, ranks, threads), results in runs.items():
        ms = float(np.median([r["ms_per_step"] for r in results]))
        rows.append({"mode": mode, "ranks": ranks, "threads_per_rank": threads, "ms_per_step": ms,
                     "ms_per_round": [round(r["ms_per_step"], 1) for r in results],
                     "tokens_per_s": results[0]["tokens_per_step"] / ms * 1000,
                     "allreduce_bytes_per_step": results[0]["bytes_per_step"],
                     "message_bytes": results[0]["message_bytes"]})
    return rows


def _gpt2_small_step_ms(mode, steps=3):
    """One process, 2 threads: the median of ``steps`` training steps at GPT-2 small's shape."""
    from lora_np import GPT, GPTConfig, LoraConfig, add_lora, manual_seed
    from lora_np.optim import AdamW
    manual_seed(0)
    model = GPT(GPTConfig(**GPT2_SMALL, dropout=0.0))
    model = (add_lora(model, LoraConfig(r=LORA_R, target_modules=["c_attn"])) if mode == "lora"
             else model.requires_grad_(True))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = AdamW(params, lr=1e-4)
    x = np.random.default_rng(0).integers(0, GPT2_SMALL["vocab_size"], size=(4, 129))
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        _, loss = model(x[:, :-1], x[:, 1:])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times[1:])), params


def gpt2_small():
    from lora_np import distributed
    out = {}
    for mode in ("lora", "full"):
        ms, params = _gpt2_small_step_ms(mode)
        out[mode] = {"ms_per_step": ms, "trainable": sum(p.data.size for p in params),
                     "message_bytes": distributed.message_bytes(params, 2)}
        del params
    return out


def on_paper(gpt2):
    rows = []
    for mode, m in gpt2.items():
        for link, bandwidth in BANDWIDTHS.items():
            for n in MACHINES:
                exchange = 2 * (n - 1) / n * m["message_bytes"] / bandwidth * 1000
                total = m["ms_per_step"] / n + exchange
                rows.append({"mode": mode, "link": link, "machines": n, "compute_ms": m["ms_per_step"] / n,
                             "allreduce_ms": exchange, "step_ms": total, "speedup": m["ms_per_step"] / total})
    return rows


def _load():
    return [round(x, 2) for x in os.getloadavg()]


def report(results):
    r = results
    lines = ["# Data-parallel training over MPI (lora_np.distributed)", "",
             f"Machine: {r['machine']}. Load average (1, 5, 15 min) before {r['load_before']}, after the "
             f"throughput runs {r['load_after_throughput']}, at the end {r['load_after']}: other jobs shared "
             f"the 2 cores, so expect ±10-20% or more.", "",
             f"## 1. Two ranks × 1 thread vs one process × 2 threads (config {r['config']}: n_embd, n_layer, "
             f"n_head, T, B = {CONFIGS[r['config']]}; {r['steps']} steps per run, median; {r['rounds']} "
             f"rounds interleaved)", "",
             "| fine-tuning | ranks × threads | ms/step (median of rounds) | per round | tokens/s | "
             "Allreduce bytes/step (counted) | message_bytes |", "|---|---|---|---|---|---|---|"]
    for row in r["throughput"]:
        lines.append(f"| {row['mode']} | {row['ranks']} × {row['threads_per_rank']} | {row['ms_per_step']:,.1f} | "
                     f"{row['ms_per_round']} | {row['tokens_per_s']:,.0f} | {row['allreduce_bytes_per_step']:,.0f} | "
                     f"{row['message_bytes']:,} |")
    g = r["gpt2_small"]
    lines += ["", "## 2. GPT-2 small's shape (124M parameters), one process × 2 threads, T 128 × B 4", "",
              "| fine-tuning | trainable parameters | bytes per Allreduce | step (ms, median of 3) |",
              "|---|---|---|---|"]
    for mode in ("lora", "full"):
        lines.append(f"| {mode} | {g[mode]['trainable']:,} | {g[mode]['message_bytes']:,} "
                     f"| {g[mode]['ms_per_step']:,.0f} |")
    lines += ["", f"LoRA r={LORA_R} on c_attn exchanges "
              f"1/{g['full']['message_bytes'] / g['lora']['message_bytes']:.0f} "
              f"of full fine-tuning's bytes per step.", "",
              "## 3. On paper: N machines like this one, the global batch split N ways", "",
              "time per step = compute/N + 2 (N−1)/N · bytes / bandwidth (a ring Allreduce; latency ignored)", "",
              "| fine-tuning | link | " + " | ".join(f"N={n}" for n in MACHINES) + " |",
              "|---|---|" + "---|" * len(MACHINES)]
    for mode in ("lora", "full"):
        for link in BANDWIDTHS:
            cells = [row for row in r["on_paper"] if row["mode"] == mode and row["link"] == link]
            lines.append(f"| {mode} | {link} | " + " | ".join(
                f"{c['step_ms']:,.0f} ms ({c['speedup']:.1f}×)" for c in cells) + " |")
    lines += ["", "The Allreduce alone (it does not depend on this machine's load):", "",
              "| fine-tuning | link | " + " | ".join(f"N={n}" for n in MACHINES) + " |",
              "|---|---|" + "---|" * len(MACHINES)]
    for mode in ("lora", "full"):
        for link in BANDWIDTHS:
            cells = [row for row in r["on_paper"] if row["mode"] == mode and row["link"] == link]
            lines.append(f"| {mode} | {link} | " + " | ".join(f"{c['allreduce_ms']:,.1f} ms" for c in cells) + " |")
    lines += ["", f"Command: `python benchmarks/bench_distributed.py --config {r['config']} --steps {r['steps']} "
              f"--rounds {r['rounds']}`", ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="M")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--worker", choices=("lora", "full"), help=argparse.SUPPRESS)
    parser.add_argument("--report-only", action="store_true", help="rewrite the .md from the saved .json")
    args = parser.parse_args(argv)
    if args.report_only:
        return write(json.loads((HERE / "results_distributed.json").read_text()))
    if args.worker:
        return worker(args.config, args.worker, args.steps)
    import lora_np
    results = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
                          f"{platform.python_version()}, NumPy {np.__version__}, lora_np {lora_np.__version__}",
               "config": args.config, "steps": args.steps, "rounds": args.rounds, "load_before": _load()}
    results["throughput"] = throughput(args.config, args.steps, args.rounds)
    results["load_after_throughput"] = _load()
    os.environ.setdefault("LORA_NP_NUM_THREADS", "2")
    results["gpt2_small"] = gpt2_small()
    results["on_paper"] = on_paper(results["gpt2_small"])
    results["load_after"] = _load()
    write(results)


def write(results):
    (HERE / "results_distributed.json").write_text(json.dumps(results, indent=1) + "\n")
    text = report(results)
    (HERE / "results_distributed.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
