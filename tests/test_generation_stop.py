"""Generation stops at end-of-sequence / end-of-turn ids, as Hugging Face's ``generate`` does.

Oracle: transformers' greedy ``generate(..., eos_token_id=..., do_sample=False)`` on the same
checkpoint (a tiny Llama / Qwen3 folder and a tiny GPT-2 written by transformers, float64), with
``pad_token_id`` set to the first stop id (what transformers pads a finished row with by default):
the same tokens, the same length. The stop id is taken from the unconstrained greedy output, so the
stop really happens before max_new_tokens. The CLI test counts the model's forward calls.
"""

import io
import sys

import numpy as np
import pytest
import torch

import lora_np as ln
from hf_oracle import tiny_hf_gpt2
from llama_oracle import SIZES, float64_transformers, load_hf, tiny_hf_llama
from test_chat_cli import chat_dir, cli  # noqa: F401 (chat_dir is a fixture)

N_NEW = 12


def _hf_greedy(model, idx, stop):
    out = model.generate(torch.tensor(idx), max_new_tokens=N_NEW, do_sample=False, eos_token_id=stop,
                         pad_token_id=stop[0])
    return out.numpy()


def _stops(ours, idx):
    """Stop ids met early: row 0's 3rd new token, and a second id met by row 1 later (or never)."""
    free = ours.generate(idx, N_NEW, temperature=0)
    new = free[:, idx.shape[1]:]
    return [int(new[0, 2])], [int(new[0, 2]), int(new[-1, 6])]


@pytest.mark.parametrize("kind", ["llama", "qwen3"])
def test_llama_family_greedy_stop_equals_transformers(kind, tmp_path, rng):
    tiny_hf_llama(tmp_path, kind, bos_token_id=None, eos_token_id=None)
    ours = ln.load_model(tmp_path, dtype=np.float64)
    idx = rng.integers(0, SIZES["vocab_size"], size=(2, 5))
    with float64_transformers():
        theirs = load_hf(tmp_path, kind)
        for stop in _stops(ours, idx):
            for rows in (idx[:1], idx):
                got = ours.generate(rows, N_NEW, temperature=0, stop_token_ids=stop)
                ref = _hf_greedy(theirs, rows, stop)
                assert np.array_equal(got, ref), (stop, got, ref)
    stop = _stops(ours, idx)[0]
    free = ours.generate(idx[:1], N_NEW, temperature=0)[0, idx.shape[1]:]
    one = ours.generate(idx[:1], N_NEW, temperature=0, stop_token_ids=stop)
    first = list(free).index(stop[0])  # ≤ 2: the 3rd new token may repeat an earlier one
    assert np.array_equal(one[0, idx.shape[1]:], free[:first + 1])  # up to and including the stop token


def test_gpt2_greedy_stop_equals_transformers(tmp_path, rng):
    theirs = tiny_hf_gpt2(tmp_path, n_positions=32)
    ours = ln.load_gpt2(tmp_path, dtype=np.float64)
    idx = rng.integers(0, 61, size=(2, 4))
    with torch.no_grad():
        for stop in _stops(ours, idx):
            for rows in (idx[:1], idx):
                assert np.array_equal(ours.generate(rows, N_NEW, temperature=0, stop_token_ids=stop),
                                      _hf_greedy(theirs, rows, stop)), stop


def test_sampling_rows_after_their_stop_hold_the_first_stop_id(tmp_path):
    ln.manual_seed(0)
    model = ln.GPT(ln.GPTConfig(vocab_size=8, block_size=64, n_layer=1, n_head=2, n_embd=8))
    out = model.generate(np.zeros((6, 1), dtype=np.int64), 40, temperature=1.0, stop_token_ids=[3, 5])
    assert out.shape[1] < 41  # with 8 tokens, every row meets 3 or 5 long before 40 samples
    for row in out[:, 1:]:
        hit = np.flatnonzero(np.isin(row, [3, 5]))
        assert hit.size, row
        assert (row[hit[0] + 1:] == 3).all(), row
    assert np.isin(out[:, -1], [3, 5]).all()


@pytest.mark.parametrize("bad, error", [([61], ValueError), (-1, ValueError), ("0", TypeError), ([1.5], ValueError),
                                        (None, None)])
def test_bad_stop_ids_are_refused(bad, error):
    model = ln.GPT(ln.GPTConfig(vocab_size=61, block_size=8, n_layer=1, n_head=2, n_embd=8))
    if error is None:  # a NumPy integer is a token id
        assert model.generate(np.zeros((1, 2), dtype=np.int64), 3, stop_token_ids=np.int64(60)).shape[1] <= 5
        return
    with pytest.raises(error, match="stop_token_ids"):
        model.generate(np.zeros((1, 2), dtype=np.int64), 3, stop_token_ids=bad)


def test_generate_chat_stops_at_end_of_turn_after_one_forward(chat_dir, capsys, monkeypatch):  # noqa: F811
    """ln_f outputs ones and only <|im_end|>'s embedding row is non-zero, so its logit is the largest
    at every step: the reply is <|im_end|> at once, after one forward, not --max-new-tokens of them."""
    model = ln.load_gpt2(chat_dir)
    tr = model.transformer
    tr.ln_f.weight.data[:], tr.ln_f.bias.data[:] = 0.0, 1.0
    tr.wte.weight.data[:] = 0.0
    tr.wte.weight.data[ln.load_tokenizer(chat_dir).end_of_turn_id] = 1.0
    ln.save_gpt2(model, chat_dir)
    calls = []
    forward = ln.GPT.hidden_states
    monkeypatch.setattr(ln.GPT, "hidden_states", lambda *a, **k: calls.append(1) or forward(*a, **k))
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello world\n"))
    code, out, err = cli(capsys, "generate", "--model", chat_dir, "--chat", "--max-new-tokens", 20, "--temperature", 0)
    assert (code, out) == (0, "\n"), err
    assert len(calls) == 1
    calls.clear()
    code, out, err = cli(capsys, "generate", "--model", chat_dir, "--prompt", "hello", "--max-new-tokens", 20,
                         "--temperature", 0)
    assert (code, out) == (0, "hello\n"), err
    assert len(calls) == 1  # plain generate stops at eos (here <|im_end|> too)
