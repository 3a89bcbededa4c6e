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

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from workers import (NEW_TOKENS, PROMPT_TOKENS, THREADS, comparison_arguments, finish, hf_greedy,  # noqa: E402
                     ours_greedy, ours_lora_train, peft_lora_train, run_once, run_worker, train_pair)

VOCAB, LAYERS, WIDTH, HEADS, CONTEXT = 50257, 12, 768, 12, 1024
LORA_R = 8
TRAIN_SHAPES = {"T128_B4": (128, 4), "T512_B2": (512, 2)}


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


# ---- workers (each in its own process) ----------------------------------------------------------
def ours_train(case):
    import lora_np
    ours_lora_train(lambda: lora_np.load_gpt2(case["checkpoint"]), ["c_attn"], LORA_R, tokens(*case["shape"]))


def peft_train(case):
    from transformers import GPT2LMHeadModel
    peft_lora_train(lambda: GPT2LMHeadModel.from_pretrained(case["checkpoint"]),
                    dict(r=LORA_R, lora_alpha=2 * LORA_R, target_modules=["c_attn"], fan_in_fan_out=True),
                    tokens(*case["shape"]))


def ours_generate(case):
    import lora_np
    ours_greedy(lambda: lora_np.load_gpt2(case["checkpoint"]), tokens(PROMPT_TOKENS, 1)[0], case["repeats"])


def hf_generate(case):
    from transformers import GPT2LMHeadModel
    hf_greedy(lambda: GPT2LMHeadModel.from_pretrained(case["checkpoint"]), tokens(PROMPT_TOKENS, 1)[0],
              case["repeats"])


WORKERS = {"ours_train": ours_train, "peft_train": peft_train, "ours_generate": ours_generate,
           "hf_generate": hf_generate}


# ---- the driver ---------------------------------------------------------------------------------
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
    args = comparison_arguments(__doc__.splitlines()[0], [*TRAIN_SHAPES, "generate"], HERE / "results_gpt2_small",
                                steps=6, warmup=2, repeats=3).parse_args(argv)
    if args.worker:
        return run_worker(WORKERS, args.worker)
    start = time.perf_counter()
    results = {"load": [round(os.getloadavg()[0], 1)]}
    with tempfile.TemporaryDirectory() as tmp:
        make_checkpoint(tmp)
        for name, shape in TRAIN_SHAPES.items():
            if not args.only or name in args.only:
                results[name] = train_pair(__file__, {"checkpoint": tmp, "shape": shape}, args.warmup, args.steps)
                print(name, json.dumps({k: {m: v[m] for m in ("ms", "peak_rss_mb", "train_peak_rss_mb")}
                                         for k, v in results[name].items()}), flush=True)
        if not args.only or "generate" in args.only:
            results["generate"] = {kind: run_once(__file__, {"kind": kind, "checkpoint": tmp, "repeats": args.repeats})
                                   for kind in ("ours_generate", "hf_generate")}
            print("generate", json.dumps(results["generate"]), flush=True)
    finish(args, results, start, report)


if __name__ == "__main__":
    main()
