"""Hugging Face's one-file tokenizer, ``tokenizer.json``: read its stages, write them back.

    {"added_tokens": [{"id", "content", "special", "lstrip", "rstrip", "single_word", "normalized"}],
     "normalizer": NFC | Replace | Prepend | Sequence of them | null,       (normalizers.py)
     "pre_tokenizer": Split / ByteLevel / Digits / Metaspace / Sequence | null, (pre_tokenizers.py)
     "post_processor": ByteLevel | TemplateProcessing | Sequence of them | null, (post_processor.py)
     "decoder": ByteLevel | Sequence[Replace, ByteFallback, Fuse, Strip],    (decoders.py)
     "model": {"type": "BPE", "vocab": {token: id}, "merges": ["a b", ...] or [["a", "b"], ...],
               "ignore_merges", "byte_fallback", "unk_token", "fuse_unk"}}       (bpe.py)

Byte-level BPEs (GPT-2, Llama 3, Qwen, SmolLM2) and SentencePiece-style ones (Gemma: " " -> "▁",
byte fallback) are both BPE models; the pre-tokenizer says which (it ends with ByteLevel or not).

A ``TemplateProcessing`` post-processor (Llama 3 puts its <|begin_of_text|> there) adds its special
tokens only when ``encode(..., add_special_tokens=True)`` asks. An added token's ``normalized`` flag is
not needed: matching runs on the raw text, which equals matching on the NFC text for every token
that NFC leaves alone. Any other model type (WordPiece, Unigram, WordLevel), option or step is refused
with one error naming it, before anything is built.
"""

import json
from pathlib import Path

from ..io.atomic import atomic_write_json, atomic_write_text, read_json
from .decoders import Decoder
from .normalizers import Normalizer
from .pre_tokenizers import PreTokenizer

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
_OTHER_MODELS = {"WordPiece": "WordPiece (BERT)", "Unigram": "Unigram (SentencePiece)", "WordLevel": "WordLevel"}


def read_tokenizer_json(path):
    """``BPETokenizer``'s keyword arguments from a ``tokenizer.json`` file (see the module docstring)."""
    obj = read_json(path, "tokenizer file")
    model = obj.get("model")
    if not isinstance(model, dict):
        raise ValueError(f"{path}: no 'model' object")
    _check_model(model, path)
    for key in ("truncation", "padding"):
        if obj.get(key) is not None:
            raise ValueError(f"{path}: '{key}' is set ({obj[key]!r:.60}); lora_np reads tokenizer.json files "
                             f"without {key} (set it to null)")
    return {"vocab": model.get("vocab"), "merges": _read_merges(model.get("merges"), path), "source": str(path),
            "added_tokens": [_read_added(t, path) for t in _list(obj, "added_tokens", path)],
            "normalizer": _checked(Normalizer, obj, "normalizer", path),
            "pre_tokenizer": _checked(PreTokenizer, obj, "pre_tokenizer", path),
            "decoder": _checked(Decoder, obj, "decoder", path),
            "post_processor": obj.get("post_processor"),  # its tokens are checked once the vocabulary is built
            "ignore_merges": bool(model.get("ignore_merges", False)),
            "byte_fallback": bool(model.get("byte_fallback", False)),
            "unk_token": model.get("unk_token"), "fuse_unk": bool(model.get("fuse_unk", False)),
            "special_tokens_map": None}


def _checked(make, obj, section, path):
    """``make(obj[section])``, any error naming the file and the section (a wrongly shaped object too)."""
    spec = obj.get(section)
    try:
        return make(spec)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    except (TypeError, AttributeError, KeyError, IndexError) as exc:
        raise ValueError(f"{path}: {section} {spec!r:.80} is malformed ({type(exc).__name__}: {exc})") from None


def _list(obj, key, path):
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"{path}: '{key}' must be a list; got {value!r:.60}")
    return value


def _check_model(model, path):
    kind = model.get("type", "BPE" if "merges" in model else None)
    if kind != "BPE":
        name = _OTHER_MODELS.get(kind, repr(kind)) if isinstance(kind, str) else repr(kind)
        raise ValueError(f"{path}: model type {name} is not supported: lora_np reads byte-level BPE "
                         f"tokenizers (GPT-2, Llama 3, Qwen) and SentencePiece-style BPEs (Gemma)")
    if model.get("unk_token") is not None and not isinstance(model["unk_token"], str):
        raise ValueError(f"{path}: the BPE model's unk_token must be a string or null; got {model['unk_token']!r:.60}")
    for key in ("continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(key):
            raise ValueError(f"{path}: BPE option {key}={model[key]!r} is not supported (lora_np reads it empty)")
    if model.get("dropout"):
        raise ValueError(f"{path}: BPE dropout={model['dropout']!r} is not supported (encoding would be random)")
    if not isinstance(model.get("vocab"), dict) or not isinstance(model.get("merges"), list):
        raise ValueError(f"{path}: the BPE model needs a 'vocab' object and a 'merges' list")


def _read_merges(merges, path):
    """Merges as "a b" strings (older files) or ["a", "b"] pairs (tokenizers >= 0.20)."""
    out = []
    for rank, m in enumerate(merges):
        pair = m.split(" ") if isinstance(m, str) else m
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) and p for p in pair)):
            raise ValueError(f"{path}: merge {rank} must be 'a b' or ['a', 'b']; got {m!r:.60}")
        out.append((pair[0], pair[1]))
    return out


def _read_added(token, path):
    if not isinstance(token, dict):
        raise ValueError(f"{path}: an added token must be an object; got {token!r:.60}")
    for flag in ("lstrip", "rstrip", "single_word"):
        if token.get(flag):
            raise ValueError(f"{path}: added token {token.get('content')!r} has {flag}=true, which is not "
                             f"supported (lora_np matches added tokens exactly as written)")
    return {"id": token.get("id"), "content": token.get("content"), "special": bool(token.get("special", False))}


def make_directory(directory):
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def tokenizer_json_object(tok):
    """The ``tokenizer.json`` object of a ``BPETokenizer`` (read back by ``tokenizers`` and ``read_tokenizer_json``)."""
    added = [{"id": t["id"], "content": t["content"], "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": t["special"]} for t in tok.added_tokens]
    bpe = tok.model
    model = {"type": "BPE", "dropout": None, "unk_token": bpe.unk_token, "continuing_subword_prefix": None,
             "end_of_word_suffix": None, "fuse_unk": bpe.fuse_unk, "byte_fallback": bpe.byte_fallback,
             "ignore_merges": bpe.ignore_merges, "vocab": dict(sorted(bpe.vocab.items(), key=lambda item: item[1])),
             "merges": [list(m) for m in bpe.merges]}
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
            "normalizer": tok.normalizer.json, "pre_tokenizer": tok.pre_tokenizer.json,
            "post_processor": tok.post_processor.json, "decoder": tok.decoder.json, "model": model}


def write_tokenizer_files(directory, tok):
    """tokenizer.json, and tokenizer_config.json with the special tokens' names and the chat template."""
    text = json.dumps(tokenizer_json_object(tok), ensure_ascii=False)
    atomic_write_text(Path(directory) / TOKENIZER_FILE, text + "\n")
    config = {"tokenizer_class": "PreTrainedTokenizerFast", **tok.special_tokens_map}
    if tok.chat_template is not None:
        config["chat_template"] = tok.chat_template
    atomic_write_json(Path(directory) / CONFIG_FILE, config)
