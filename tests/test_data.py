"""Tokenizer, task generators, masks and batching."""

import json

import numpy as np
import pytest

from lora_np.data import CharTokenizer, jsonl_dataset, make_lines, task_dataset, text_dataset
from lora_np.data.tasks import answer_mask
from lora_np.data.text_files import read_jsonl_examples


def test_tokenizer_round_trip_and_files(tmp_path):
    tok = CharTokenizer.from_text("hello world")
    ids = tok.encode("hello")
    assert tok.decode(ids) == "hello" and ids.dtype == np.int64
    tok.save(tmp_path)
    assert CharTokenizer.load(tmp_path).chars == tok.chars
    with pytest.raises(ValueError, match="'z'"):
        tok.encode("hez")
    with pytest.raises(ValueError, match="distinct"):
        CharTokenizer(["a", "a"])


def test_tasks_are_deterministic_and_follow_their_rules():
    assert make_lines("copy", 5, seed=3) == make_lines("copy", 5, seed=3)
    assert make_lines("copy", 5, seed=3) != make_lines("copy", 5, seed=4)
    for line in make_lines("shift", 20, seed=0):
        prompt, answer = line.rstrip("\n").split(">")
        assert answer == "".join("abcdefgh"[("abcdefgh".index(c) + 1) % 8] for c in prompt)
    for line in make_lines("reverse", 20, seed=0):
        prompt, answer = line.rstrip("\n").split(">")
        assert answer == prompt[::-1]
    with pytest.raises(ValueError, match="unknown task 'sort'"):
        make_lines("sort", 1, seed=0)


def test_answer_mask_scores_only_the_answer_and_newline():
    assert answer_mask("abc>cba\n") == [False] * 4 + [True] * 4


def test_task_windows_start_at_lines_and_mask_prompts():
    data = task_dataset("copy", block_size=16, n_train=200, n_val=50)
    x, y = data.batch("train", 8, np.random.default_rng(0))
    assert x.shape == y.shape == (8, 16)
    text = [data.tokenizer.decode(row) for row in x]
    for row_text, row_y in zip(text, y):
        assert row_text.index(">") > 0  # each window begins with a prompt
        first_answer = row_text.index(">")  # the target at '>' is the first answer character
        assert row_y[first_answer] != -1 and all(row_y[:first_answer] == -1)
    batches = data.fixed_batches("val", 4, 2)
    assert len(batches) == 2 and all(np.array_equal(a[0], b[0])
                                     for a, b in zip(batches, data.fixed_batches("val", 4, 2)))


def test_text_dataset_validation(tmp_path):
    with pytest.raises(FileNotFoundError):
        text_dataset(tmp_path / "missing.txt", 8)
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="empty"):
        text_dataset(tmp_path / "empty.txt", 8)
    (tmp_path / "short.txt").write_text("abcdefghij")
    with pytest.raises(ValueError, match="needs at least"):
        text_dataset(tmp_path / "short.txt", 8)
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00abc" * 10)
    with pytest.raises(ValueError, match="UTF-8"):
        text_dataset(tmp_path / "bin.txt", 8)
    (tmp_path / "ok.txt").write_text("the quick brown fox jumps over the lazy dog. " * 20)
    data = text_dataset(tmp_path / "ok.txt", 8)
    x, y = data.batch("train", 3, np.random.default_rng(0))
    assert (y != -1).all() and np.array_equal(x[:, 1:], y[:, :-1])


def test_unknown_character_policies():
    tok = CharTokenizer("abc>\n")
    assert tok.decode(tok.encode("abzc", unknown="drop")) == "abc"
    assert tok.decode(tok.encode("abzéc", unknown="map:>")) == "ab>>c"
    with pytest.raises(ValueError, match="'zé'|'éz'"):
        tok.encode("abzéc")
    with pytest.raises(ValueError, match="'error', 'drop' or 'map:X'.*'skip'"):
        tok.encode("abc", unknown="skip")
    with pytest.raises(ValueError, match="'q' is not in the vocabulary"):
        tok.encode("abc", unknown="map:q")


def test_data_errors_name_the_file_and_line(tmp_path):
    """Issue 28 item 6: a byte that is not UTF-8 (line and column, counted from the bytes), a
    character a character model lacks (the line it first appears on), a bad JSONL line."""
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"abc\nab\xe9c\n" + b"abc\n" * 20)
    with pytest.raises(ValueError, match=r"latin1.txt, line 2, column 3: byte 0xe9 is not UTF-8"):
        text_dataset(path, 4)
    path = tmp_path / "text.txt"
    path.write_text("abc>abc\n" * 3 + "abz>abz\n" + "abc>abc\n" * 20)
    with pytest.raises(ValueError, match=r"text.txt, line 4: characters 'z' are not in the vocabulary.*"
                                         r"--unknown-chars drop"):
        text_dataset(path, 4, CharTokenizer("abc>\n"))
    path = tmp_path / "qa.jsonl"
    path.write_text('{"prompt": "ab>", "completion": "ba"}\n\n{"prompt": "a>", "completion": "az"}\n')
    with pytest.raises(ValueError, match=r"qa.jsonl, line 3: characters 'z'"):
        jsonl_dataset(path, 4, CharTokenizer("abc>\n"))


def test_blank_jsonl_lines_are_skipped_and_numbers_stay_the_files(tmp_path):
    """The documented policy: blank lines are skipped; examples keep their line in the file."""
    path = tmp_path / "qa.jsonl"
    path.write_text('\n{"prompt": "a", "completion": "b"}\n   \n{"prompt": "c", "completion": "d"}\n\n')
    assert read_jsonl_examples(path) == [("a", "b", 2), ("c", "d", 4)]


def test_windows_without_a_completion_token_are_left_out(tmp_path):
    """A prompt longer than the window: its windows that hold no completion token are dropped (the
    loss would have nothing to average), and every kept window scores at least one target; the
    oracle is a direct count over each window's targets."""
    rows = [("abcabcabcabcabcabcab>", "cba"), ("ab>", "ba"), ("abc>", "cba")] * 4
    path = tmp_path / "long.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in rows))
    data = jsonl_dataset(path, 4, CharTokenizer("abc>\n"))
    tokens, counts, starts = data.splits["train"]
    assert all(counts[s + 1:s + 5].any() for s in starts)
    dropped = [s for s in range(0, 24, 4) if not counts[s + 1:s + 5].any()]  # inside the first long prompt
    assert dropped == [0, 4, 8, 12, 16] and 20 in starts.tolist()
    x, y = data.batch("train", 64, np.random.default_rng(0))
    assert ((y != -1).sum(axis=1) > 0).all()


def test_json_data_under_another_name_is_refused_not_read_as_text(tmp_path):
    """A .json file, or JSON-lines records in a file not named .jsonl, would train on the raw JSON
    characters; each is refused with the file's name and the *.jsonl rule, before any tokenizing."""
    from lora_np.data import file_dataset
    record = json.dumps({"prompt": "ab>", "completion": "ba"}) + "\n"
    chat = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ho"}]})
    for name, text in (("qa.json", record * 40), ("qa.txt", "\n" + record * 40), ("chat.data", chat + "\n")):
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(ValueError, match=rf"{name}.*\*\.jsonl"):
            file_dataset(path, 4, CharTokenizer('abcdefghijklmnopqrstuvwxyz>{}":,[] \n'))
    plain = tmp_path / "notes.txt"
    plain.write_text("{not json at all}\n" * 20)
    assert file_dataset(plain, 4).name == "text file notes.txt"


def _times_scored(data, split):
    """How often each stream position is a loss-counted target over all the split's windows (a direct
    count: window k's targets are positions starts[k] + 1 … starts[k] + block_size)."""
    tokens, counts, starts = data.splits[split]
    [(_, y)] = data.fixed_batches(split, len(starts), 1)  # every window once, in order
    seen = np.zeros(len(tokens), np.int64)
    for row, start in zip(y, starts):
        seen[start + 1:start + 1 + data.block_size] += row != -1
    return seen, counts


def test_packed_examples_count_each_target_in_exactly_one_window(tmp_path):
    """Short examples packed in long windows: every completion token is scored in exactly one window,
    the first example's as often as the last's (before, a window starting at each example ran on into
    the next ones, so the last examples were scored in up to block_size / length windows)."""
    rows = [("ab>", "ba"), ("abc>", "cba"), ("a>", "a"), ("abcabcabcab>", "bacbacba")] * 9
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in rows))
    for block in (4, 7, 32):
        data = jsonl_dataset(path, block, CharTokenizer("abc>\n"))
        for split in ("train", "val"):
            seen, counts = _times_scored(data, split)
            assert (seen[counts] == 1).all() and (seen[~counts] == 0).all(), (block, split)


def test_describe_counts_the_examples_tokens_not_the_padding(tmp_path):
    """The start line's token counts are the examples' own tokens (prompt + completion + end, counted
    here from the rows), not the block_size end tokens appended to pad each split's end."""
    rows = [("ab>", "ba"), ("abc>", "cba"), ("a>", "a")] * 4
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in rows))
    data = jsonl_dataset(path, 8, CharTokenizer("abc>\n"))
    n_train = sum(len(p) + len(c) + 1 for p, c in rows[:-1])
    n_val = len(rows[-1][0]) + len(rows[-1][1]) + 1
    assert f"({n_train:,} train tokens in " in data.describe() and f", {n_val:,} val tokens in " in data.describe()
