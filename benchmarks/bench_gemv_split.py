"""Where a decode step's GEMV should be split across the threads: greedy generation at SmolLM2-135M's and
Qwen3-0.6B's shapes (random weights, built in memory) with ``parallel.SMALL_GEMV_WEIGHT`` set in turn, the
settings interleaved round by round in one process; prints tokens/s per setting and their medians.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_gemv_split.py [--tokens 32] [--rounds 3]

With ``--handoff``, what the second thread could buy a decode step at SmolLM2-135M's layer shapes: the wall
time of one ``parallel.run_tasks`` hand-off of two empty tasks, and of the layer's GEMV groups
(q, k, v: 576 × 576, 576 × 192, 576 × 192; gate, up: 576 × 1536 twice) run one after the other on one
thread, as two concurrent tasks (one hand-off per group), and each split by columns (one hand-off per
GEMV), over 30 layers' distinct weights (as a step reads them, from memory), in interleaved rounds:

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_gemv_split.py --handoff [--rounds 5]
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import lora_np as ln  # noqa: E402
from lora_np import parallel  # noqa: E402
from lora_np.models.llama import Llama, LlamaConfig  # noqa: E402

SHAPES = {"smollm2-135m": LlamaConfig(),  # the config's defaults are SmolLM2-135M's
          "qwen3-0.6b": LlamaConfig(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                                    num_attention_heads=16, num_key_value_heads=8, head_dim=128, qk_norm=True,
                                    rope_theta=1e6, model_type="qwen3")}
THRESHOLDS = (1 << 18, 1 << 20, 1 << 22, 1 << 62)


def handoff(rounds):
    """``--handoff``: µs per hand-off, and ms per token of SmolLM2's q/k/v and gate/up GEMVs three ways."""
    from functools import partial
    rng, x = np.random.default_rng(0), np.ones((1, 576), np.float32)
    groups = [[rng.standard_normal(shape, np.float32) for shape in shapes] for _ in range(30)
              for shapes in (((576, 576), (576, 192), (576, 192)), ((576, 1536), (576, 1536)))]
    outs = [[np.empty((1, w.shape[1]), np.float32) for w in g] for g in groups]

    def sequential():
        for g, o in zip(groups, outs):
            for w, y in zip(g, o):
                np.matmul(x, w, out=y)

    def concurrent():  # the first task alone, the others together (q | k, v; gate | up)
        for g, o in zip(groups, outs):
            parallel.run_tasks([partial(np.matmul, x, g[0], out=o[0]),
                                lambda g=g, o=o: [np.matmul(x, w, out=y) for w, y in zip(g[1:], o[1:])]])

    def split():  # two column halves per GEMV, as gemm_split splits a big one on two threads
        for g, o in zip(groups, outs):
            for w, y in zip(g, o):
                half = w.shape[1] // 2
                parallel.run_tasks([partial(np.matmul, x, w[:, :half], out=y[:, :half]),
                                    partial(np.matmul, x, w[:, half:], out=y[:, half:])])

    def empty_handoffs(n=1000):
        for _ in range(n):
            parallel.run_tasks([int, int])

    times = {}
    with parallel.single_threaded_blas():
        for _ in range(rounds):
            for name, fn in (("hand-off of two empty tasks (µs each)", empty_handoffs),
                             ("q,k,v + gate,up GEMVs one after the other (ms per token)", sequential),
                             ("... as two concurrent tasks per group (ms per token)", concurrent),
                             ("... each GEMV split by columns (ms per token)", split)):
                start = time.perf_counter()
                fn()
                times.setdefault(name, []).append(1e3 * (time.perf_counter() - start))
    for name, t in times.items():
        print(f"{name}: median {np.median(t):.2f}  {[round(v, 2) for v in t]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--handoff", action="store_true", help="hand-off cost and concurrent GEMV groups (see above)")
    args = ap.parse_args()
    if args.handoff:
        print(f"threads {parallel.thread_count()}, load average {os.getloadavg()[:2]}")
        handoff(args.rounds)
        print(f"load average {os.getloadavg()[:2]}")
        return
    print(f"threads {parallel.thread_count()}, load average {os.getloadavg()[:2]}")
    idx = np.arange(16)[None] + 100
    for name, config in SHAPES.items():
        ln.manual_seed(0)
        model = Llama(config).eval()
        rates = {t: [] for t in THRESHOLDS}
        for _ in range(args.rounds):
            for t in THRESHOLDS:
                parallel.SMALL_GEMV_WEIGHT = t
                model.generate(idx, 4, temperature=0)  # warm-up
                start = time.perf_counter()
                model.generate(idx, args.tokens, temperature=0)
                rates[t].append(args.tokens / (time.perf_counter() - start))
        for t, r in rates.items():
            label = "never" if t == THRESHOLDS[-1] else f"2^{t.bit_length() - 1}"
            print(f"{name}  SMALL_GEMV_WEIGHT {label:>5}  tokens/s {[round(x, 2) for x in r]}  "
                  f"median {np.median(r):.2f}")
    print(f"load average {os.getloadavg()[:2]}")


if __name__ == "__main__":
    main()
