"""A user's data file as a TokenDataset, tokenized with the model's own tokenizer.

    FILE.txt     plain UTF-8 text, encoded as one text (after Gemma's or Llama 3's <bos>, as transformers'
                 ``tokenizer(text)`` encodes it): every token is a target; the last tenth is validation.
    FILE.jsonl   one {"prompt": ..., "completion": ...} object per line (instruction tuning).

Only a ``.jsonl`` name is read as JSON lines; JSON under any other name (a ``.json`` file, or a file
whose first line is a prompt/completion or messages object) is refused, not trained on as text.

JSONL examples are tokenized as ``start + prompt ids + completion ids + end`` (the prompt and the
completion separately, so the boundary never merges into one token), where ``start`` is what
transformers' ``tokenizer(prompt)`` puts before a text (Gemma's and Llama 3's <bos>; nothing for GPT-2,
SmolLM2, Qwen or a character model) and ``end`` is the end-of-text token (<|endoftext|>, Gemma's
<eos>) for a BPE model and a newline for a character model. Only the completion and its
end token count in the loss: the prompt is given, never predicted. Examples are *packed*: laid
back to back into one stream, each window starting at an example's first token (and every
block_size tokens inside an example longer than a window). A window may run on into the next
examples (attention is not reset at the end token, as in GPT-2's own training), but it scores only
the targets before the next window's start, so each completion token counts in exactly one window
(``dataset.packed_windows``) and no example weighs more for where it sits in the file. A window
that would score no completion token (inside a prompt longer than the window) is left out: it has
nothing to learn. The end of each split is *padded* with end tokens that the loss ignores, so the last
example gets a whole window. The last tenth of the examples (at least one) is validation.

Blank lines in a JSONL file are skipped (a file may end with one, and JSON Lines tools write
them); every other line must be one object. Every error names the file and its line (a byte that
is not UTF-8, a line that is not JSON or lacks a field, a character a character model lacks).
"""

import json
from collections import namedtuple
from pathlib import Path

import numpy as np

from ..tokenizer import CharTokenizer
from .dataset import TokenDataset, packed_dataset

Example = namedtuple("Example", "prompt completion line")


def encode_text(tokenizer, text, unknown="error"):
    """Token ids (int64) of ``text``. ``unknown`` is a character model's policy for characters it
    lacks ('error', 'drop', 'map:X'); a byte-level BPE has no unknown characters."""
    if isinstance(tokenizer, CharTokenizer):
        return tokenizer.encode(text, unknown)
    return np.asarray(tokenizer.encode(text), dtype=np.int64)


def read_text_file(path):
    """The file's text; a byte that is not UTF-8 is reported with its line and column."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ValueError(f"data file {path}, line {line}, column {column}: byte 0x{raw[exc.start]:02x} is not "
                         f"UTF-8 text; save the file as UTF-8") from None
    if not text:
        raise ValueError(f"data file {path} is empty")
    return text


def _first_unknown_line(tokenizer, text):
    known = tokenizer.index
    first = next(i for i, ch in enumerate(text) if ch not in known)
    return text.count("\n", 0, first) + 1


def _encode_file_text(tokenizer, text, path, unknown, line=None):
    try:
        tokens = encode_text(tokenizer, text, unknown)
    except ValueError as exc:
        if not isinstance(tokenizer, CharTokenizer):  # a BPE refuses only text that is not Unicode (a lone surrogate)
            raise ValueError(f"data file {path}{'' if line is None else f', line {line}'}: {exc}") from None
        where = line if line is not None else _first_unknown_line(tokenizer, text)
        raise ValueError(f"data file {path}, line {where}: {exc}; drop or replace them (unknown='drop' or "
                         f"'map:X', on the command line --unknown-chars drop or --unknown-chars map:X)") from None
    if len(tokens) == 0 and line is None:
        raise ValueError(f"data file {path} tokenizes to nothing (no token the model knows is left)")
    return tokens


def read_text_tokens(path, tokenizer=None, unknown="error"):
    """(tokens, tokenizer) of a text file, after the tokenizer's start tokens (``start_tokens``: the file is
    one text, as transformers' ``tokenizer(text)`` encodes it); without a ``tokenizer``, a character
    vocabulary built from it."""
    text = read_text_file(path)
    tokenizer = tokenizer or CharTokenizer.from_text(text)
    tokens = _encode_file_text(tokenizer, text, path, unknown)
    return np.concatenate([np.asarray(start_tokens(tokenizer), np.int64), tokens]), tokenizer


def text_window(n_tokens, context, multiple=64):
    """(block_size, note): the model's context, or, in a text too short for two windows of it (train
    and validation), the longest window that both hold (rounded down to a multiple of ``multiple``
    when it is longer than that); ``note`` says which for the start-up line."""
    largest = (n_tokens - 2) // 2
    if largest >= context:
        return context, ""
    block = largest // multiple * multiple if largest >= multiple else largest
    return max(block, 1), (f"windows of {max(block, 1)} tokens: the longest that this text's train and validation "
                           f"parts both hold (the model's context is {context}); --block-size sets another")


def text_dataset(path, block_size, tokenizer=None, val_fraction=0.1, unknown="error", context=None):
    """A user's text file: every token is a target; the last ``val_fraction`` is validation.
    Without a ``tokenizer``, a character vocabulary is built from the text. ``block_size`` None: the
    model's ``context``, shortened to fit a short text (``text_window``)."""
    path = Path(path)
    tokens, tokenizer = read_text_tokens(path, tokenizer, unknown)
    note = ""
    if block_size is None:
        block_size, note = text_window(len(tokens), context)
    unit = "characters" if isinstance(tokenizer, CharTokenizer) else "tokens"
    n_val = max(block_size + 1, int(len(tokens) * val_fraction))
    if len(tokens) < n_val + block_size + 1:
        fits = f"; a block size of at most {(len(tokens) - 2) // 2} fits it (--block-size)" if len(tokens) > 3 else ""
        raise ValueError(f"data file {path} has {len(tokens)} {unit}; with block_size={block_size} it needs "
                         f"at least {n_val + block_size + 1} (train and validation windows){fits}")
    splits = {}
    for split, part in (("train", tokens[:-n_val]), ("val", tokens[-n_val:])):
        splits[split] = (part, np.ones(len(part), dtype=bool), np.arange(len(part) - block_size))
    data = TokenDataset(tokenizer, splits, block_size, f"text file {path.name}")
    data.window_note = note
    return data


def _parse_jsonl_line(path, number, line):
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}, line {number}: not valid JSON ({exc.msg})") from None
    if not (isinstance(obj, dict) and isinstance(obj.get("prompt"), str) and isinstance(obj.get("completion"), str)):
        found = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(f"{path}, line {number}: each line needs string fields 'prompt' and 'completion'; "
                         f"got {found}")
    return Example(obj["prompt"], obj["completion"], number)


def read_jsonl_examples(path):
    """[Example(prompt, completion, line), ...] from a JSONL file (blank lines skipped)."""
    lines = read_text_file(path).split("\n")
    examples = [_parse_jsonl_line(path, number, line) for number, line in enumerate(lines, start=1) if line.strip()]
    if len(examples) < 2:
        raise ValueError(f"{path} holds {len(examples)} example(s); it needs at least 2 (training and validation)")
    return examples


def _end_of_example(tokenizer):
    if isinstance(tokenizer, CharTokenizer):
        if "\n" not in tokenizer.index:
            raise ValueError("a JSONL file needs a newline in the character vocabulary to close each example")
        return tokenizer.index["\n"]
    return tokenizer.eot_token_id


def start_tokens(tokenizer):
    """The ids put before a text that starts a sequence: the post-processor's prefix, as transformers'
    ``tokenizer(text)`` adds it (Gemma's and Llama 3's <bos>); none for a character model."""
    return [] if isinstance(tokenizer, CharTokenizer) else list(tokenizer.post_processor.prefix)


def _example_records(examples, tokenizer, end, path, unknown):
    """Each example as a record (ids, counts): start + prompt ids + completion ids + end, the completion
    and the end counted."""
    records, start = [], start_tokens(tokenizer)
    for ex in examples:
        p = start + list(_encode_file_text(tokenizer, ex.prompt, path, unknown, ex.line))
        c = _encode_file_text(tokenizer, ex.completion, path, unknown, ex.line)
        records.append((np.array([*p, *c, end], np.int64), np.array([False] * len(p) + [True] * (len(c) + 1))))
    return records


def jsonl_dataset(path, block_size, tokenizer=None, val_fraction=0.1, unknown="error", context=None, whole=False):
    """Prompt/completion pairs (see the module docstring); the loss counts completion tokens only.
    ``block_size`` None: sized to the longest example (``dataset.records_window``, at most ``context``);
    ``whole``: every example in the validation split (evaluating the whole file)."""
    path = Path(path)
    examples = read_jsonl_examples(path)
    if tokenizer is None:
        tokenizer = CharTokenizer.from_text("".join(ex.prompt + ex.completion for ex in examples) + "\n")
    end = _end_of_example(tokenizer)
    records = _example_records(examples, tokenizer, end, path, unknown)
    return packed_dataset([[r] for r in records], tokenizer, block_size, end, f"JSONL file {path.name}",
                          val_fraction, context, whole)


def first_json_object(path):
    """The first non-blank line of ``path`` parsed as a JSON object, or None when it is not one."""
    with open(path, encoding="utf-8", errors="replace") as f:
        first = next((line for line in f if line.strip()), "")
    try:
        obj = json.loads(first)
    except json.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def _holds_json_records(path):
    """True when the first non-blank line is a JSON object with "messages" or "prompt"/"completion"."""
    obj = first_json_object(path)
    return obj is not None and ("messages" in obj or "prompt" in obj or "completion" in obj)


def check_data_file_name(path):
    """Refuse JSON data under a name that would be read as plain text (a .json file, or JSON-lines records
    in a file not named .jsonl): training on the raw JSON characters is never what was meant."""
    path = Path(path)
    if path.suffix.lower() == ".jsonl" or not path.is_file():
        return
    if path.suffix.lower() == ".json" or _holds_json_records(path):
        raise ValueError(f"data file {path} holds JSON, which would be read as plain text; name JSON-lines data "
                         f"(one {{\"prompt\", \"completion\"}} or {{\"messages\"}} object a line) *.jsonl")


def file_dataset(path, block_size, tokenizer=None, unknown="error", context=None):
    """``jsonl_dataset`` for a .jsonl file, ``text_dataset`` for anything else (JSON under another name is
    refused: ``check_data_file_name``). ``block_size`` None: sized to the data, at most ``context``."""
    check_data_file_name(path)
    make = jsonl_dataset if Path(path).suffix.lower() == ".jsonl" else text_dataset
    return make(path, block_size, tokenizer, unknown=unknown, context=context)
