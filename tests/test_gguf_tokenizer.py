"""GGUF tokenizers (lora_np/tokenizer/gguf_tokenizer.py) on small files written here with the gguf package's
GGUFWriter: the ids of transformers' GGUF tokenizer, and one clear error naming the file for each bad input.
The real files (SmolLM2, Gemma 3) are in test_real_tokenizers.py."""

import re

import pytest

import lora_np as ln
from lora_np import BPETokenizer

gguf = pytest.importorskip("gguf")

TEXTS = ["lowest 12345 hello<|im_start|> <think>x", "  héllo\n\n wörld 🤗 \x00\x1b", "def f(x):\n\treturn x  # ok",
         "日本語 ١٢٣ 2026-11-25", "I'M sure you'LL see", ""]


@pytest.fixture(scope="module")
def small():
    return BPETokenizer.train("low lower lowest newest widest 12 345 hello world, hello there! " * 20, 300)


def _write_gguf(path, tokens, types=None, merges=None, model="gpt2", pre="qwen2", arch="llama", **extra):
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), arch=arch)
    writer.add_tokenizer_model(model)
    if pre is not None:
        writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types or [1] * len(tokens))
    if merges is not None:
        writer.add_token_merges(merges)
    for name, value in extra.items():
        getattr(writer, f"add_{name}")(value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _small_gguf(path, small, pre="qwen2"):
    """The small BPE plus a control token and a user-defined one, a bos added by default, a chat template."""
    tokens = list(small.vocab)
    return _write_gguf(path, tokens + ["<|im_start|>", "<think>"], [1] * len(tokens) + [3, 4],
                       [f"{a} {b}" for a, b in small.merges], pre=pre, eos_token_id=len(tokens),
                       bos_token_id=len(tokens) - 1, add_bos_token=True,
                       chat_template="{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}")


@pytest.mark.parametrize("pre", ["qwen2", "llama-bpe", "smollm"])
def test_byte_level_gguf_equals_transformers(tmp_path, small, pre):
    """Oracle: transformers' GGUF tokenizer on the same file (each pre-tokenizer name its regex)."""
    transformers = pytest.importorskip("transformers")
    path = _small_gguf(tmp_path / "m.gguf", small, pre)
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=path.name)
    ours = ln.load_tokenizer(path)
    for text in TEXTS:
        assert ours.encode(text, allow_special=True, add_special_tokens=True) == hf(text)["input_ids"], text
    assert ours.chat_template == hf.chat_template
    assert (ours.eos_token_id, ours.bos_token_id) == (hf.eos_token_id, hf.bos_token_id)
    assert ln.load_tokenizer(tmp_path).vocab == ours.vocab  # a folder holding one GGUF


def test_folder_with_two_ggufs_is_refused(tmp_path, small):
    _small_gguf(tmp_path / "a.gguf", small)
    _small_gguf(tmp_path / "b.gguf", small)
    with pytest.raises(ValueError, match=rf"{re.escape(str(tmp_path))} holds 2 GGUF files \(a.gguf, b.gguf\)"):
        ln.load_tokenizer(tmp_path)


# ---- bad input: one error, naming the file -------------------------------------------------------
def test_garbage_and_truncated_files(tmp_path, small):
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"not a gguf file at all" * 10)
    whole = _small_gguf(tmp_path / "whole" / "m.gguf", small).read_bytes()
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(whole[:len(whole) // 2])
    for path in (garbage, truncated):
        with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: not a readable GGUF file"):
            ln.load_tokenizer(path)
    with pytest.raises(FileNotFoundError, match="GGUF file not found"):
        ln.load_tokenizer(tmp_path / "absent.gguf")


@pytest.mark.parametrize("change, error", [
    (dict(model="bert"), r"tokenizer.ggml.model 'bert' is not supported; lora_np reads 'gpt2'"),
    (dict(pre="mystery-bpe"), r"tokenizer.ggml.pre 'mystery-bpe' is not a pre-tokenizer lora_np knows"),
    (dict(merges=["l o", "lo zz"]), r"merge 1 \('lo' 'zz'\) uses or makes a token that is not in the vocabulary"),
    (dict(merges=["l o w"]), r"tokenizer.ggml.merges\[0\] must be two tokens separated by a space"),
    (dict(model="llama", arch="llama"), r"a SentencePiece tokenizer \(tokenizer.ggml.model 'llama'\) of architecture "
                                        r"'llama' is not supported"),
    (dict(tokens=["a", "b", "a"]), r"tokenizer.ggml.tokens names a token twice"),
])
def test_bad_tokenizer_metadata_is_named(tmp_path, small, change, error):
    fields = dict(tokens=list(small.vocab), merges=[f"{a} {b}" for a, b in small.merges])
    fields.update(change)
    path = _write_gguf(tmp_path / "bad.gguf", **fields)
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: {error}"):
        ln.load_tokenizer(path)


def test_folder_added_tokens_survive_the_gguf_writer(tmp_path):
    """A tokenizer.json with a plain added token ("<think>", special false, as Qwen3's), plain added tokens
    spelled like control tokens ("<|tool|>", "<unused3>") and a special one, written to GGUF and read back:
    the added tokens stay whole (USER_DEFINED and CONTROL, as llama.cpp's converter writes them, not NORMAL,
    which BPE would split); oracle: the `tokenizers` library on the folder."""
    tokenizers = pytest.importorskip("tokenizers")
    from lora_np.io.gguf_tokenizer_write import add_tokenizer
    tok = tokenizers.ByteLevelBPETokenizer()
    tok.train_from_iterator(["the cat sat on the mat, thinking"] * 20, vocab_size=280, special_tokens=["<|im_end|>"])
    tok.add_tokens(["<think>", "<|tool|>", "<unused3>"])
    folder = tmp_path / "folder"
    folder.mkdir()
    tok.save(str(folder / "tokenizer.json"))
    rust = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    writer = gguf.GGUFWriter(str(tmp_path / "t.gguf"), arch="llama")
    add_tokenizer(writer, folder, rust.get_vocab_size())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    types = gguf.GGUFReader(tmp_path / "t.gguf").fields["tokenizer.ggml.token_type"].contents()
    assert types[rust.token_to_id("<think>")] == gguf.TokenType.USER_DEFINED
    for control in ("<|im_end|>", "<|tool|>", "<unused3>"):
        assert types[rust.token_to_id(control)] == gguf.TokenType.CONTROL, control
    ours = ln.load_tokenizer(tmp_path / "t.gguf")
    for text in ("the cat <think>sat</think> on the mat<|im_end|>", "<think><think> thinking",
                 "<|tool|>the mat<unused3>"):
        assert ours.encode(text, allow_special=True) == rust.encode(text).ids, text
