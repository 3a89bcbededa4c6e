"""The Llama family at real shapes: lora_np against transformers + PEFT, same checkpoint, same tokens.

Two random checkpoints, written once by ``transformers``' ``save_pretrained`` (float32) and loaded by
both sides (``lora_np.load_model``; ``AutoModelForCausalLM.from_pretrained``):

* SmolLM2-135M's shape: Llama, 30 layers × 576, 9 heads / 3 KV heads, vocabulary 49,152, tied head;
  LoRA step at T 256 × B 2.
* Qwen3-0.6B's shape: 28 layers × 1024, 16 heads / 8 KV heads of size 128, q/k norms, vocabulary
  151,936, tied head; LoRA step at T 128 × B 1.

LoRA r=16 (α=32) on every projection (q, k, v, o, gate, up, down), AdamW on the adapters, float32.
Each side runs in its own process with 2 threads (peak RSS from VmHWM, loading included); the two
sides of a training case take their steps in turn, so a noisy minute slows both alike. Greedy
generation with a KV cache on the base model: tokens/s against ``model.generate``. The process
and measuring helpers, and the workers' common part, are ``workers.py``'s.

    python benchmarks/bench_llm.py       # ~10 minutes, up to ~8 GiB; writes benchmarks/results_llm.md
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
from bench_train import machine_description  # noqa: E402

LORA_R = 16
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
MODELS = {
    "smollm2-135m": dict(kind="llama", shape=(256, 2), config=dict(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
        num_key_value_heads=3, max_position_embeddings=8192, rope_theta=100000.0, rms_norm_eps=1e-5,
        tie_word_embeddings=True)),
    "qwen3-0.6b": dict(kind="qwen3", shape=(128, 1), config=dict(
        vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
        num_key_value_heads=8, head_dim=128, max_position_embeddings=40960, rope_theta=1000000.0,
        rms_norm_eps=1e-6, tie_word_embeddings=True)),
}


def make_checkpoint(path, name):
    import torch
    import transformers
    spec = MODELS[name]
    config_class, model_class = {"llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
                                 "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM)}[spec["kind"]]
    torch.manual_seed(0)
    model_class(config_class(**spec["config"], bos_token_id=None, eos_token_id=None)).save_pretrained(path)


def tokens(vocab, t, b, seed=0):
    ids = np.random.default_rng(seed).integers(0, vocab, size=(b, t + 1))
    return ids[:, :-1], ids[:, 1:]


def vocab_of(case):
    return MODELS[case["model"]]["config"]["vocab_size"]


# ---- workers (each in its own process) ----------------------------------------------------------
def ours_train(case):
    import lora_np
    ours_lora_train(lambda: lora_np.load_model(case["checkpoint"]), PROJECTIONS, LORA_R,
                    tokens(vocab_of(case), *case["shape"]))


def peft_train(case):
    import torch
    from transformers import AutoModelForCausalLM
    peft_lora_train(lambda: AutoModelForCausalLM.from_pretrained(case["checkpoint"], dtype=torch.float32),
                    dict(r=LORA_R, lora_alpha=2 * LORA_R, target_modules=PROJECTIONS),
                    tokens(vocab_of(case), *case["shape"]))


def ours_generate(case):
    import lora_np
    ours_greedy(lambda: lora_np.load_model(case["checkpoint"]), tokens(vocab_of(case), PROMPT_TOKENS, 1)[0],
                case["repeats"])


def hf_generate(case):
    import torch
    from transformers import AutoModelForCausalLM
    hf_greedy(lambda: AutoModelForCausalLM.from_pretrained(case["checkpoint"], dtype=torch.float32),
              tokens(vocab_of(case), PROMPT_TOKENS, 1)[0], case["repeats"])


WORKERS = {"ours_train": ours_train, "peft_train": peft_train, "ours_generate": ours_generate,
           "hf_generate": hf_generate}


# ---- the driver ---------------------------------------------------------------------------------
def run_model(name, args):
    """One model: its checkpoint, the interleaved training pair, then the two generation runs."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        make_checkpoint(tmp, name)
        out["train"] = train_pair(__file__, {"checkpoint": tmp, "shape": MODELS[name]["shape"], "model": name},
                                  args.warmup, args.steps)
        print(name, json.dumps({k: {m: v[m] for m in ("ms", "peak_rss_mb", "train_peak_rss_mb")}
                                for k, v in out["train"].items()}), flush=True)
        out["generate"] = {kind: run_once(__file__, {"kind": kind, "checkpoint": tmp, "repeats": args.repeats,
                                                     "model": name})
                           for kind in ("ours_generate", "hf_generate")}
        print(name, "generate", json.dumps(out["generate"]), flush=True)
    return out


def report(results, seconds):
    lines = ["| | lora_np | transformers + PEFT | ratio | target |", "|---|---|---|---|---|"]
    for name in MODELS:
        if name not in results:
            continue
        t, b = MODELS[name]["shape"]
        ours, peft = results[name]["train"]["ours_train"], results[name]["train"]["peft_train"]
        gen_ours, gen_hf = results[name]["generate"]["ours_generate"], results[name]["generate"]["hf_generate"]
        rows = [(f"{name}: LoRA step, T {t} × B {b} (ms, median)", ours["ms"], peft["ms"], "≤ 0.90", ".0f"),
                (f"{name}: peak RSS (MiB, whole process)", ours["peak_rss_mb"], peft["peak_rss_mb"], "≤ 0.50", ".0f"),
                (f"{name}: peak RSS of the training steps (MiB)", ours["train_peak_rss_mb"],
                 peft["train_peak_rss_mb"], "", ".0f"),
                (f"{name}: greedy generation, {PROMPT_TOKENS}-token prompt + {NEW_TOKENS} (tokens/s)",
                 gen_ours["tokens_per_s"], gen_hf["tokens_per_s"], "≥ 1.0", ".1f")]
        lines += [f"| {label} | {a:,{fmt}} | {b_:,{fmt}} | {a / b_:.2f} | {target} |"
                  for label, a, b_, target, fmt in rows]
    import torch
    return "\n".join([
        "# The Llama family at real shapes: lora_np vs transformers + PEFT",
        "",
        "Random weights at SmolLM2-135M's shape (30 × 576, 9/3 heads, vocabulary 49,152) and Qwen3-0.6B's "
        "(28 × 1024, 16/8 heads of 128, vocabulary 151,936), tied heads, float32; LoRA r=16 (α=32) on every "
        "projection, AdamW; one checkpoint written by transformers and loaded by both; the same tokens.",
        f"Machine: {machine_description()}, torch {torch.__version__}; {THREADS} threads per process. "
        f"One run ({seconds:.0f} s), load average {results['load']} before and after (a 2-core machine "
        "shared with other work: expect ±10-20% and more when the load exceeds 2).",
        "",
        *lines,
        "",
        "Command: `python benchmarks/bench_llm.py`",
        "",
    ])


def main(argv=None):
    args = comparison_arguments(__doc__.splitlines()[0], list(MODELS), HERE / "results_llm",
                                steps=5, warmup=1, repeats=2).parse_args(argv)
    if args.worker:
        return run_worker(WORKERS, args.worker)
    start = time.perf_counter()
    results = {"load": [round(os.getloadavg()[0], 1)]}
    for name in MODELS:
        if not args.only or name in args.only:
            results[name] = run_model(name, args)
    finish(args, results, start, report)


if __name__ == "__main__":
    main()
