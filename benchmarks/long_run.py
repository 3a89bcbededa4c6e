"""Long-run stability: 2,000 float32 LoRA steps on the demo task, watching for NaN and memory growth.

    python benchmarks/long_run.py [--steps 2000] [--batch-size 32] [--out benchmarks/long_run.json]

Pretrains the quick demo's base briefly on task A (copy), then trains a LoRA adapter (r=8 on
c_attn) on task B (shift) for --steps steps, reading the process's resident memory (VmRSS) at
every evaluation. Reports whether any loss was NaN/inf and RSS after step 200 vs the last step.
"""

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import lora_np  # noqa: E402
from lora_np import GPT, GPTConfig, LoraConfig, add_lora  # noqa: E402
from lora_np.data import task_dataset  # noqa: E402
from lora_np import TrainConfig, train  # noqa: E402


def rss_mb():
    """Current resident set size of this process (Linux /proc), in MB."""
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("VmRSS not found in /proc/self/status")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=32, help="windows per LoRA step")
    p.add_argument("--out", default=str(HERE / "long_run.json"))
    args = p.parse_args(argv)
    lora_np.manual_seed(0)
    task_a, task_b = task_dataset("copy", 32), task_dataset("shift", 32, seed=1)
    model = GPT(GPTConfig(vocab_size=task_a.tokenizer.vocab_size, block_size=32, n_layer=2, n_head=4, n_embd=64))
    train(model, task_a, TrainConfig(steps=300, lr=3e-3, warmup_steps=50, eval_every=300), quiet=True)
    add_lora(model, LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn"]))
    start = time.perf_counter()
    result = train(model, task_b, TrainConfig(steps=args.steps, lr=1e-2, eval_every=args.eval_every,
                                                      batch_size=args.batch_size),
                   extra_eval=lambda m: {"rss_mb": rss_mb()}, quiet=True)
    rss = {r["step"]: r["rss_mb"] for r in result.history}
    losses = [r["val_loss"] for r in result.history]
    first = min((s for s in rss if s >= 200), default=min(rss))
    report = {"status": result.status, "steps": result.step, "seconds": time.perf_counter() - start,
              "ms_per_step": result.ms_per_step, "all_losses_finite": all(x == x and abs(x) != float("inf")
                                                                          for x in losses),
              "final_val_loss": losses[-1], "rss_mb_at": {str(first): rss[first], str(max(rss)): rss[max(rss)]},
              "rss_growth": rss[max(rss)] / rss[first] - 1, "rss_mb": rss}
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"{report['status']}: {report['steps']} LoRA steps in {report['seconds']:.0f} s "
          f"({report['ms_per_step']:.1f} ms/step), losses finite: {report['all_losses_finite']}, "
          f"final val loss {report['final_val_loss']:.3f}; RSS {rss[first]:.1f} MB at step {first} -> "
          f"{rss[max(rss)]:.1f} MB at step {max(rss)} ({100 * report['rss_growth']:+.2f}%)")
    return 0 if result.status == "done" else 1


if __name__ == "__main__":
    sys.exit(main())
