"""The overhead of a decode step alone: greedy ``generate`` on a model with the layer count of SmolLM2-135M (30)
or Qwen3-0.6B (28, q/k norms) but tiny sizes (64 wide, MLP 128, 4/2 heads of 16, vocabulary 256), so that the
GEMVs cost nothing and what is left is Python, NumPy's per-call cost and the small kernels.

Load-independent: count the instructions with callgrind at two lengths; per token = difference / 32:

    for n in 8 40; do OPENBLAS_NUM_THREADS=1 LORA_NP_NUM_THREADS=1 valgrind --tool=callgrind \\
        --callgrind-out-file=/dev/null python benchmarks/decode_overhead.py --tokens $n --once; done

Without ``--once`` it prints the CPU ms per token (the minimum of five runs of ``--tokens`` tokens).
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import lora_np as ln  # noqa: E402
from lora_np.models.llama import Llama, LlamaConfig  # noqa: E402

TINY = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
            head_dim=16)
SHAPES = {"smollm2-135m": dict(num_hidden_layers=30),
          "qwen3-0.6b": dict(num_hidden_layers=28, qk_norm=True, model_type="qwen3")}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=list(SHAPES), default="smollm2-135m")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--once", action="store_true", help="one generate call (for callgrind), no timing")
    args = ap.parse_args()
    ln.manual_seed(0)
    model = Llama(LlamaConfig(**TINY, **SHAPES[args.model])).eval()
    idx = np.arange(16)[None] + 3
    if args.once:
        model.generate(idx, args.tokens, temperature=0)
        return
    model.generate(idx, 4, temperature=0)
    runs = []
    for _ in range(5):
        cpu = time.process_time()
        model.generate(idx, args.tokens + 1, temperature=0)
        runs.append(1e3 * (time.process_time() - cpu) / args.tokens)
    print(f"{args.model} layers at tiny sizes: {min(runs):.2f} ms CPU per token "
          f"(min of {[round(r, 2) for r in runs]}), load average {os.getloadavg()[:2]}")


if __name__ == "__main__":
    main()
