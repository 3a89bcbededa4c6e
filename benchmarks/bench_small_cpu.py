"""ours / torch eager at the learner's shapes in CPU time, one thread each, one process, steps interleaved.

    LORA_NP_NUM_THREADS=1 python benchmarks/bench_small_cpu.py [--configs S,M] [--steps 10]

On a machine shared with other work, wall-clock ratios with two threads measure the waits for a
core (and torch's spinning OpenMP threads) more than the work; CPU time on one thread each measures
the work. lora_np's GPT and ``torch_gpt.TorchGPT`` (same shapes as bench_train.py's configs) run one
full fine-tuning step each in turn; prints the median and the minimum of each and their ratios, with
the load average. Measures only: no targets are asserted here.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

import torch  # noqa: E402
from bench_train import CONFIGS, VOCAB, _batch  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402
from torch_gpt import TorchGPT  # noqa: E402

import lora_np  # noqa: E402
from lora_np import GPT, GPTConfig  # noqa: E402
from lora_np.optim import AdamW  # noqa: E402
from lora_np.parallel import tune_host_allocator  # noqa: E402


def steps_for(shape):
    """(ours, torch): one full fine-tuning step each, forward + backward + AdamW."""
    c, layers, heads, t, b = shape
    lora_np.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=VOCAB, block_size=t, n_layer=layers, n_head=heads, n_embd=c))
    opt = AdamW(model.parameters(), lr=1e-4)
    x, y = _batch(t, b)
    torch.manual_seed(0)
    tmodel = TorchGPT(VOCAB, t, layers, heads, c)
    topt = torch.optim.AdamW(tmodel.parameters(), lr=1e-4)
    tx, ty = torch.tensor(x), torch.tensor(y)

    def ours():
        model(x, y)[1].backward()
        opt.step()
        opt.zero_grad()

    def theirs():
        tmodel(tx, ty).backward()
        topt.step()
        topt.zero_grad(set_to_none=True)

    return ours, theirs


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default="S,M")
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args()
    tune_host_allocator()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        for name in args.configs.split(","):
            cpu = {"ours": [], "torch": []}
            ours, theirs = steps_for(CONFIGS[name])
            for f in (ours, theirs, ours, theirs):  # warm-up
                f()
            for _ in range(args.steps):
                for label, f in (("ours", ours), ("torch", theirs)):
                    t0 = time.process_time()
                    f()
                    cpu[label].append(1000 * (time.process_time() - t0))
            med = {k: float(np.median(v)) for k, v in cpu.items()}
            low = {k: min(v) for k, v in cpu.items()}
            print(f"{name}: CPU ms/step, one thread: ours {med['ours']:.1f} (min {low['ours']:.1f}), torch "
                  f"{med['torch']:.1f} (min {low['torch']:.1f}); ours/torch {med['ours'] / med['torch']:.3f} "
                  f"(min/min {low['ours'] / low['torch']:.3f}); load average "
                  f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}; lora_np threads "
                  f"{lora_np.parallel.thread_count()}", flush=True)


if __name__ == "__main__":
    main()
