"""GPT-2's two tokenizer files: a vocabulary (token -> id) and the ranked merges, one pair a line.

``vocab.json`` + ``merges.txt`` ("#version: 0.2", then "a b" per line, rank order) are Hugging
Face's names; OpenAI's ``encoder.json`` + ``vocab.bpe`` hold the same.
"""

import json
from pathlib import Path

from ..io.atomic import atomic_write_text, read_json

FILE_NAMES = (("vocab.json", "merges.txt"), ("encoder.json", "vocab.bpe"))
MERGES_HEADER = "#version: 0.2"


def find_gpt2_files(path):
    """(vocab file, merges file) in directory ``path``, either naming; a half pair names what is missing."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"tokenizer directory not found: {path}")
    present = [(path / v, path / m) for v, m in FILE_NAMES if (path / v).is_file() or (path / m).is_file()]
    complete = [(v, m) for v, m in present if v.is_file() and m.is_file()]
    if complete:
        return complete[0]
    if present:
        v, m = present[0]
        missing, other = (m, v) if v.is_file() else (v, m)
        raise FileNotFoundError(f"tokenizer file not found: {missing} ({other.name} needs it)")
    raise FileNotFoundError(f"no BPE tokenizer files in {path}: expected vocab.json + merges.txt "
                            f"(Hugging Face) or encoder.json + vocab.bpe (OpenAI)")


def read_gpt2_files(path):
    """(vocab, merges, vocab file) from directory ``path``."""
    vocab_file, merges_file = find_gpt2_files(path)
    return read_json(vocab_file, "tokenizer vocabulary"), read_merges(merges_file), vocab_file


def read_merges(path):
    try:
        lines = Path(path).read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text: {exc}") from None
    merges = []
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\r")
        if not line or (number == 1 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"{path}, line {number}: expected two tokens separated by one space; got {line!r:.80}")
        merges.append((parts[0], parts[1]))
    return merges


def write_gpt2_files(directory, vocab, merges):
    """vocab.json (ordered by id) + merges.txt, each written atomically."""
    ordered = dict(sorted(vocab.items(), key=lambda item: item[1]))
    atomic_write_text(Path(directory) / "vocab.json", json.dumps(ordered, ensure_ascii=False) + "\n")
    atomic_write_text(Path(directory) / "merges.txt",
                      MERGES_HEADER + "\n" + "".join(f"{a} {b}\n" for a, b in merges))
