"""The ``tokenizer.*`` fields of a GGUF file that ``gguf_write.py`` writes, from a GGUF file or a folder.

From a GGUF file the fields are copied as they are. From a folder's tokenizer.json, the two kinds of
BPE that llama.cpp's converter writes:

    byte-level BPE (GPT-2, Llama 3, Qwen)   tokenizer.ggml.model "gpt2": tokens, token types, merges
    SentencePiece-style BPE (Gemma)         tokenizer.ggml.model "llama": tokens, scores, token types
                                            (<0xNN> byte tokens BYTE), add_space_prefix false

Both padded to the model's vocabulary size with unused "[PADn]" tokens; special ids, add_bos and the
chat template come through gguf's ``SpecialVocab``. The pre-tokenizer is named "default", since
llama.cpp recognizes a "gpt2" pre-tokenizer by the hash of its output, which only its converter
computes. A "llama" file has no merges: its readers (llama.cpp's SPM tokenizer, transformers' GGUF
loader, ``tokenizer/gguf_tokenizer.py``) rank every split of a token by the token's score / place in
the file, so the scores are written falling with the id, the order a BPE trainer gives merged tokens.
"""

import re
from pathlib import Path

from ..quant.gguf_weight import require_gguf
from .atomic import read_json
from .gguf_read import find_gguf, open_reader

_BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>$")


def _copy_tokenizer_fields(writer, reader):
    gguf = require_gguf()
    for key, f in reader.fields.items():
        if key.startswith("tokenizer."):
            array = f.types[0] == gguf.GGUFValueType.ARRAY
            writer.add_key_value(key, f.contents(), f.types[0], sub_type=f.types[-1] if array else None)


def looks_special(token):
    """llama.cpp's converter (``does_token_look_special``): an added token spelled like a control token,
    though tokenizer.json does not mark it special, is written CONTROL: "<|...|>", "<｜...｜>",
    "<unused...>", and "<pad>", "<mask>", "<2mass>", "[@BOS@]"."""
    return (token in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
            or (token.startswith("<|") and token.endswith("|>"))
            or (token.startswith("<｜") and token.endswith("｜>"))
            or (token.startswith("<unused") and token.endswith(">")))


def _token_types(gguf, tokens, by_id, special, added, sentencepiece):
    """As llama.cpp's converter (``get_vocab_base``, ``_set_vocab_sentencepiece``): CONTROL for special
    tokens and added tokens that look special (``looks_special``), USER_DEFINED for the other added
    tokens (its tokenizer cuts them out of the text before BPE, as tokenizer.json's added vocabulary
    does), for a SentencePiece-style vocabulary BYTE for <0xNN>, NORMAL for the rest and UNUSED for the
    padding."""
    kinds = gguf.TokenType

    def kind(i, t):
        if i not in by_id:
            return kinds.UNUSED
        if t in special or (t in added and looks_special(t)):
            return kinds.CONTROL
        if t in added:
            return kinds.USER_DEFINED
        return kinds.BYTE if sentencepiece and _BYTE_TOKEN.match(t) else kinds.NORMAL
    return [kind(i, t) for i, t in enumerate(tokens)]


def _folder_tokenizer(writer, folder, vocab_size):
    """tokenizer.* fields from a folder's tokenizer.json (a BPE), padded to ``vocab_size``."""
    gguf = require_gguf()
    spec = read_json(folder / "tokenizer.json", "tokenizer file")
    model = spec.get("model") if isinstance(spec, dict) else None
    if not isinstance(model, dict) or model.get("type") != "BPE":
        raise ValueError(f"{folder / 'tokenizer.json'}: only a BPE tokenizer.json can be written to GGUF "
                         f"(byte-level, or SentencePiece-style with byte_fallback as Gemma's)")
    sentencepiece = bool(model.get("byte_fallback"))
    added_tokens = spec.get("added_tokens", [])
    vocab = {**model["vocab"], **{t["content"]: t["id"] for t in added_tokens}}
    special = {t["content"] for t in added_tokens if t.get("special")}
    by_id = {i: t for t, i in vocab.items()}
    tokens = [by_id.get(i, f"[PAD{i}]") for i in range(max(vocab_size, len(vocab)))]
    writer.add_tokenizer_model("llama" if sentencepiece else "gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    if sentencepiece:
        writer.add_token_scores([-float(i) for i in range(len(tokens))])
        writer.add_add_space_prefix(False)
    added = {t["content"] for t in added_tokens}
    writer.add_token_types(_token_types(gguf, tokens, by_id, special, added, sentencepiece))
    gguf.SpecialVocab(folder, load_merges=not sentencepiece, n_vocab=len(tokens)).add_to_gguf(writer)


def add_tokenizer(writer, source, vocab_size):
    """Copy the tokenizer of ``source`` (a GGUF file, or a folder holding one or a tokenizer.json)."""
    source = Path(source)
    gguf_file = find_gguf(source)
    if gguf_file is not None:
        return _copy_tokenizer_fields(writer, open_reader(gguf_file))
    if (source / "tokenizer.json").is_file():
        return _folder_tokenizer(writer, source, vocab_size)
    raise FileNotFoundError(f"no tokenizer to write into the GGUF file: {source} is neither a GGUF file nor a "
                            f"folder holding one or a tokenizer.json")
