"""Tokenizer, task generators, masks and batching."""

import numpy as np
import pytest

from lora_np.data import CharTokenizer, make_lines, task_dataset, text_dataset
from lora_np.data.tasks import answer_mask


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
    assert len(batches) == 2 and all(np.array_equal(a[0], b[0]) for a, b in zip(batches, data.fixed_batches("val", 4, 2)))


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
