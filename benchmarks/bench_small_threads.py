"""Where a two-thread step loses to one thread, at the learner's shapes, measured without trusting the wall clock.

    python benchmarks/bench_small_threads.py [--configs S,M] [--steps 8] [--lora [--targets c_attn]] [--baseline DIR]

On a machine shared with other work a two-thread wall time measures the waits for a core. This
script runs one full fine-tuning step (or LoRA) at a time, on one thread (BLAS limited to one) and
on two, in turn, in one process; with ``--baseline DIR`` an earlier checkout's lora_np (imported
under another name) runs in the same rounds. ``lora_np.parallel``'s hand-offs are wrapped to read
each thread's CPU time (``time.thread_time``, which a waiting thread does not accrue), giving:

- serial: the main thread's CPU time outside the hand-offs (Python, the kernels not split);
- model: serial + Σ over hand-offs of the largest thread's CPU time in it: what the step's wall
  time would be with both cores free and no start-up delay of the other thread;
- per step: hand-offs to the pool, blocks run in them, BLAS GEMM calls (``gemm_kernel``);
- per step, from one more step after the timed ones: the graph's ops (nodes that are not leaves)
  and the Python and C function calls on the main thread (``sys.setprofile``; the helpers' calls
  inside the hand-offs are not counted).

``--targets`` picks the LoRA layers (default c_attn, c_proj, c_fc; bench_train.py's LoRA case is
``--targets c_attn``).

Prints medians over the steps, the load average and each model over the one-thread CPU time.
Measures only: no targets are asserted here.
"""

import argparse
import collections
import contextlib
import importlib
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from bench_train import CONFIGS, LORA_R, VOCAB, _batch  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

cpu = time.thread_time


def instrument(par, counts):
    """Wrap ``par._run_blocks`` (every hand-off) and ``par.gemm_kernel`` (every BLAS GEMM) to add to ``counts``."""
    run_blocks, gemm_kernel = par._run_blocks, par.gemm_kernel

    def timed_run_blocks(edges, body):
        per_thread, main = collections.defaultdict(float), threading.get_ident()

        def timed_body(i, lo, hi):
            t0 = cpu()
            body(i, lo, hi)
            per_thread[threading.get_ident()] += cpu() - t0

        t0 = cpu()
        run_blocks(edges, timed_body)
        in_main = cpu() - t0
        counts["handoffs"] += len(edges) > 2
        counts["blocks"] += len(edges) - 1
        counts["in_handoffs"] += in_main
        counts["longest"] += max([in_main] + [t for k, t in per_thread.items() if k != main])

    def counted_gemm_kernel(y, products, bias):
        counts["gemms"] += 1
        return gemm_kernel(y, products, bias)

    par._run_blocks, par.gemm_kernel = timed_run_blocks, counted_gemm_kernel


def make_step(package, shape, lora, targets=("c_attn", "c_proj", "c_fc")):
    """One training step of ``package``'s GPT at ``shape`` (forward, backward, AdamW), its parallel module, counts."""
    lib = importlib.import_module(package)
    trace_graph = importlib.import_module(package + ".autograd").trace_graph
    par = importlib.import_module(package + ".parallel")
    adamw = importlib.import_module(package + ".optim").AdamW
    c, layers, heads, t, b = shape
    lib.manual_seed(0)
    model = lib.GPT(lib.GPTConfig(vocab_size=VOCAB, block_size=t, n_layer=layers, n_head=heads, n_embd=c))
    if lora:
        lib.add_lora(model, lib.LoraConfig(r=LORA_R, lora_alpha=2 * LORA_R, target_modules=list(targets)))
    opt = adamw([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    x, y = _batch(t, b)

    def step(calls=None):
        if calls is None:
            model(x, y)[1].backward()
        else:  # one counted step: the graph's ops and the main thread's function calls
            sys.setprofile(lambda frame, event, arg: calls.update((event,)) if event in ("call", "c_call") else None)
            try:
                loss = model(x, y)[1]
                calls["ops"] = sum(node["op"] != "leaf" for node in trace_graph(loss))
                loss.backward()
            finally:
                sys.setprofile(None)
        opt.step()
        opt.zero_grad()

    counts = collections.Counter()
    instrument(par, counts)
    return step, par, counts


def measure(cases, steps):
    """{(label, threads): [per-step dicts]}: every case on 1 then 2 threads, round by round (round 0 warms up)."""
    rows = collections.defaultdict(list)
    for round_ in range(steps + 1):
        for label, (step, par, counts) in cases.items():
            for threads in (1, 2):
                par._threads = threads  # the thread count lora_np read from the environment, set per step here
                counts.clear()
                with threadpool_limits(1) if threads == 1 else contextlib.nullcontext():
                    m0, p0, w0 = cpu(), time.process_time(), time.perf_counter()
                    step()
                    main, proc, wall = cpu() - m0, time.process_time() - p0, time.perf_counter() - w0
                if round_:
                    serial = main - counts["in_handoffs"]
                    rows[label, threads].append(dict(
                        cpu=1e3 * proc, wall=1e3 * wall, serial=1e3 * serial, model=1e3 * (serial + counts["longest"]),
                        handoffs=counts["handoffs"], blocks=counts["blocks"], gemms=counts["gemms"]))
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default="S,M")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--lora", action="store_true", help="LoRA r=8 (on --targets) instead of full fine-tuning")
    p.add_argument("--targets", default="c_attn,c_proj,c_fc", help="the LoRA layers, comma-separated")
    p.add_argument("--baseline", metavar="DIR", help="an earlier checkout whose lora_np runs in the same rounds")
    args = p.parse_args()
    import lora_np.parallel
    lora_np.parallel.tune_host_allocator()
    packages = ["lora_np"]
    if args.baseline:
        copy = Path(tempfile.mkdtemp(prefix="bench_small_threads_"))
        shutil.copytree(Path(args.baseline) / "lora_np", copy / "lora_np_baseline")
        sys.path.insert(0, str(copy))
        packages.insert(0, "lora_np_baseline")
    for name in args.configs.split(","):
        cases = {package: make_step(package, CONFIGS[name], args.lora, args.targets.split(",")) for package in packages}
        rows = measure(cases, args.steps)
        calls = {}
        for label, (step, par, _) in cases.items():  # one counted step each, on two threads
            par._threads, calls[label] = 2, collections.Counter()
            step(calls[label])

        def med(label, threads, key):
            return float(np.median([r[key] for r in rows[label, threads]]))

        print(f"{name}{f' LoRA on {args.targets}' if args.lora else ''}: medians of {args.steps} steps, load average "
              f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
        for label in packages:
            one, two = (lambda key, t=t: med(label, t, key) for t in (1, 2))
            print(f"  {label:16s} one thread: CPU {one('cpu'):7.1f} ms | two threads: CPU {two('cpu'):7.1f}, wall "
                  f"{two('wall'):7.1f}, model {two('model'):6.1f} (serial {two('serial'):5.1f}) = "
                  f"{two('model') / one('cpu'):.3f} of one thread's CPU | per step: {two('handoffs'):.0f} hand-offs, "
                  f"{two('blocks'):.0f} blocks, {two('gemms'):.0f} BLAS GEMMs (one thread: {one('gemms'):.0f}), "
                  f"{calls[label]['ops']} ops, main thread's calls {calls[label]['call']} Python + "
                  f"{calls[label]['c_call']} C", flush=True)


if __name__ == "__main__":
    main()
