"""Hugging Face's one-file tokenizer, ``tokenizer.json``: read the byte-level BPE parts, write them back.

    {"added_tokens": [{"id", "content", "special", "lstrip", "rstrip", "single_word", "normalized"}],
     "normalizer": NFC | Sequence of NFC | null,            (pipeline.py)
     "pre_tokenizer": Split / ByteLevel / Digits / Sequence, (pipeline.py)
     "post_processor": ByteLevel | TemplateProcessing | Sequence of them | null,
     "decoder": ByteLevel,
     "model": {"type": "BPE", "vocab": {token: id}, "merges": ["a b", ...] or [["a", "b"], ...],
               "ignore_merges": bool, ...}}

A ``TemplateProcessing`` post-processor (Llama 3 puts its <|begin_of_text|> there) adds its special
tokens only when ``encode(..., add_special_tokens=True)`` asks. An added token's ``normalized`` flag is
not needed: matching runs on the raw text, which equals matching on the NFC text for every token
that NFC leaves alone. Any other model type (WordPiece, Unigram, WordLevel), option or step is refused
with one error naming it, before anything is built.
"""

import json
from pathlib import Path

from ..io.atomic import atomic_write_json, atomic_write_text, read_json
from .pipeline import Normalizer, PreTokenizer

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
_OTHER_MODELS = {"WordPiece": "WordPiece (BERT)", "Unigram": "Unigram (SentencePiece)", "WordLevel": "WordLevel"}
_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}


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
    decoder = obj.get("decoder")
    if not (isinstance(decoder, dict) and decoder.get("type") == "ByteLevel"):
        kind = decoder.get("type") if isinstance(decoder, dict) else decoder
        raise ValueError(f"{path}: decoder {kind!r:.60} is not supported: lora_np reads the ByteLevel decoder")
    return {"vocab": model.get("vocab"), "merges": _read_merges(model.get("merges"), path), "source": str(path),
            "added_tokens": [_read_added(t, path) for t in _list(obj, "added_tokens", path)],
            "normalizer": _checked(Normalizer, obj, "normalizer", path),
            "pre_tokenizer": _checked(PreTokenizer, obj, "pre_tokenizer", path),
            "post_processor": _checked(_checked_post_processor, obj, "post_processor", path),
            "ignore_merges": bool(model.get("ignore_merges", False)),
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
                         f"tokenizers (GPT-2, Llama 3, Qwen)")
    if model.get("byte_fallback"):
        raise ValueError(f"{path}: a BPE with byte_fallback (a SentencePiece-style BPE) is not supported: "
                         f"lora_np reads byte-level BPE tokenizers")
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


def post_processor_ids(spec, token_to_id):
    """(prefix ids, suffix ids) a post-processor puts around one sequence: ByteLevel adds none,
    TemplateProcessing its special tokens (e.g. Llama 3's <|begin_of_text|>)."""
    kind = spec.get("type") if isinstance(spec, dict) else spec
    if spec is None or kind == "ByteLevel":
        return [], []
    if kind == "Sequence" and isinstance(spec.get("processors"), list):
        parts = [post_processor_ids(s, token_to_id) for s in spec["processors"]]
        return [i for p, _ in parts for i in p], [i for _, s in reversed(parts) for i in s]
    if kind == "TemplateProcessing" and isinstance(spec.get("single"), list):
        return _template_ids(spec, token_to_id)
    raise ValueError(f"post_processor {kind!r:.60} is not supported: lora_np reads ByteLevel, TemplateProcessing "
                     f"and a Sequence of them")


def _checked_post_processor(spec):
    post_processor_ids(spec, lambda name: 0)
    return spec


def _template_ids(spec, token_to_id):
    prefix, suffix, seen_text = [], [], False
    for item in spec["single"]:
        if "Sequence" in item:
            seen_text = True
            continue
        name = item.get("SpecialToken", {}).get("id")
        known = (spec.get("special_tokens") or {}).get(name, {}).get("ids")
        ids = known if known is not None else [token_to_id(name)]
        if name is None or None in ids:
            raise ValueError(f"post_processor TemplateProcessing: {item!r:.60} names no known token")
        (suffix if seen_text else prefix).extend(ids)
    return prefix, suffix


def make_directory(directory):
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def tokenizer_json_object(tok):
    """The ``tokenizer.json`` object of a ``BPETokenizer`` (read back by ``tokenizers`` and ``read_tokenizer_json``)."""
    added = [{"id": t["id"], "content": t["content"], "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": t["special"]} for t in tok.added_tokens]
    model = {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
             "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": tok.ignore_merges,
             "vocab": dict(sorted(tok.vocab.items(), key=lambda item: item[1])), "merges": [list(m) for m in tok.merges]}
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
            "normalizer": tok.normalizer.json, "pre_tokenizer": tok.pre_tokenizer.json,
            "post_processor": tok.post_processor, "decoder": dict(_BYTE_LEVEL), "model": model}


def write_tokenizer_files(directory, tok):
    """tokenizer.json, and tokenizer_config.json with the special tokens' names and the chat template."""
    text = json.dumps(tokenizer_json_object(tok), ensure_ascii=False)
    atomic_write_text(Path(directory) / TOKENIZER_FILE, text + "\n")
    config = {"tokenizer_class": "PreTrainedTokenizerFast", **tok.special_tokens_map}
    if tok.chat_template is not None:
        config["chat_template"] = tok.chat_template
    atomic_write_json(Path(directory) / CONFIG_FILE, config)
