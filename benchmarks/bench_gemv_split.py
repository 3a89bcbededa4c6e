"""Where a decode step's GEMV should be split across the threads: greedy generation at SmolLM2-135M's and
Qwen3-0.6B's shapes (random weights, built in memory) with ``parallel.SMALL_GEMV_WEIGHT`` set in turn, the
settings interleaved round by round in one process; prints tokens/s per setting and their medians.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_gemv_split.py [--tokens 32] [--rounds 3]
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
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
