"""The tokenizer inside a GGUF file (llama.cpp's format), read from its ``tokenizer.ggml.*`` metadata with the
``gguf`` package's ``GGUFReader`` (llama.cpp's own reader; lora_np writes no GGUF parser).

    tokenizer.ggml.model        "gpt2": a byte-level BPE with ``merges`` (SmolLM2, Llama 3, Qwen2)
                                "llama": a SentencePiece-style BPE with ``scores`` and no merges (Gemma)
    tokenizer.ggml.pre          the split regex's name for "gpt2" ("smollm", "llama-bpe", "qwen2", ...)
    tokenizer.ggml.tokens       the vocabulary, in id order
    tokenizer.ggml.token_type   3 = control (an added special token), 4 = user-defined (an added token)
    tokenizer.ggml.merges       "a b" per merge, in rank order ("gpt2")
    tokenizer.ggml.{bos,eos,unknown,padding}_token_id, tokenizer.ggml.add_bos_token
    tokenizer.chat_template     the Jinja chat template

The result is the tokenizer that transformers' GGUF loader builds (``integrations/gguf``), stage by stage:

- "gpt2": a token outside the byte alphabet is respelled in it; a pre-tokenizer name transformers knows
  picks its regex, and the GPT-2 family of names ("gpt-2", "smollm", "starcoder", ...) keeps GPT-2's
  (llama.cpp splits digits apart first for "smollm" and a few others; transformers does not).
- "llama" for Gemma: spaces become "▁" (a token of spaces is respelled with "▁"), unknown characters
  fall back to "<0xNN>" byte tokens, and the merges are recovered from the vocabulary: every split of a
  token into two tokens is a merge, ranked by the token's position in the file, then the longer
  left half first (Gemma's scores do not follow its merge order; its file order does).
"""

import functools
from pathlib import Path

from .byte_level import BYTE_TO_UNICODE, bytes_as_chars
from .chat_template import ChatTemplate
from .pre_tokenizers import LLAMA3_REGEX, QWEN_REGEX, PreTokenizer

CONTROL, USER_DEFINED = 3, 4
_GPT4O_REGEX = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
                r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
                r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# tokenizer.ggml.pre -> split regex (None: GPT-2's ByteLevel pre-tokenizer), as transformers maps them.
PRE_TOKENIZERS = {
    **dict.fromkeys(("default", "gpt-2", "gpt2", "smollm", "starcoder", "refact", "olmo", "phi-2", "codeshell",
                     "exaone", "command-r", "minerva-7b", "mellum"), None),
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "falcon3", "smaug-bpe", "dbrx", "pixtral", "lfm2"),
                    LLAMA3_REGEX),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen", "megrez"), QWEN_REGEX),
    **dict.fromkeys(("gpt-4o", "llama4"), _GPT4O_REGEX),
}
SENTENCEPIECE_ARCHITECTURES = ("gemma", "gemma2", "gemma3")
_BYTE_ALPHABET = frozenset(BYTE_TO_UNICODE.values())
_NAMES = {"bos_token": "bos_token_id", "eos_token": "eos_token_id", "unk_token": "unknown_token_id",
          "pad_token": "padding_token_id"}


def open_gguf(path):
    """A ``gguf.GGUFReader`` on ``path``; a missing file, a missing package or an unreadable file is one error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {path}")
    try:
        from gguf import GGUFReader  # optional: only GGUF files need it
    except ImportError:
        raise ImportError(f"{path}: reading a GGUF file needs the gguf package (pip install gguf)") from None
    try:
        stat = path.stat()
        return _cached_reader(GGUFReader, str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    except Exception as exc:  # the reader raises ValueError, IndexError, struct errors ... on a damaged file
        raise ValueError(f"{path}: not a readable GGUF file, truncated or damaged ({type(exc).__name__}: "
                         f"{str(exc)[:120]})") from None


@functools.lru_cache(maxsize=2)
def _cached_reader(reader_class, path, mtime_ns, size):
    """One ``GGUFReader`` per file version: its constructor parses every metadata array element by element
    in Python (Gemma 3's 262k-token vocabulary: tens of seconds), and a command reads the config, the
    tokenizer and the weights from the same file. A changed file (mtime, size) is read afresh."""
    return reader_class(path)


def gguf_fields(reader, prefix):
    """{name: value} of the metadata whose names start with ``prefix`` (strings decoded, arrays as lists)."""
    return {name: field.contents() for name, field in reader.fields.items() if name.startswith(prefix)}


def read_gguf_tokenizer(path, reader=None):
    """``BPETokenizer``'s keyword arguments from a GGUF file's tokenizer metadata (see the module docstring)."""
    reader = reader if reader is not None else open_gguf(path)
    try:
        meta = {**gguf_fields(reader, "tokenizer."), **gguf_fields(reader, "general.architecture")}
    except Exception as exc:
        raise ValueError(f"{path}: its tokenizer metadata cannot be read ({type(exc).__name__}: {exc})") from None
    kind, tokens = meta.get("tokenizer.ggml.model"), meta.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list) or not tokens:
        raise ValueError(f"{path}: no tokenizer.ggml.tokens; this GGUF holds no tokenizer")
    if kind == "gpt2":
        parts = _byte_level(meta, path)
    elif kind == "llama" and meta.get("general.architecture") in SENTENCEPIECE_ARCHITECTURES:
        parts = _sentencepiece(meta)
    elif kind == "llama":
        raise ValueError(f"{path}: a SentencePiece tokenizer (tokenizer.ggml.model 'llama') of architecture "
                         f"{meta.get('general.architecture')!r} is not supported; lora_np reads it for "
                         f"{', '.join(SENTENCEPIECE_ARCHITECTURES)}")
    else:
        raise ValueError(f"{path}: tokenizer.ggml.model {kind!r} is not supported; lora_np reads 'gpt2' "
                         f"(byte-level BPE) and 'llama' (SentencePiece-style BPE, Gemma)")
    vocab = parts["vocab"]
    if len(vocab) != len(tokens):
        raise ValueError(f"{path}: tokenizer.ggml.tokens names a token twice ({len(tokens) - len(vocab)} repeats)")
    spelled = list(vocab)
    ids = {name: meta.get(f"tokenizer.ggml.{key}") for name, key in _NAMES.items()}
    names = {name: spelled[i] for name, i in ids.items() if isinstance(i, int) and 0 <= i < len(spelled)}
    add_bos = meta.get("tokenizer.ggml.add_bos_token", kind == "llama")
    template = meta.get("tokenizer.chat_template")
    return {**parts, "source": str(path), "added_tokens": _added(meta, vocab, kind == "gpt2"),
            "special_tokens_map": names,
            "chat_template": None if template is None else ChatTemplate(template, f"{path} tokenizer.chat_template"),
            "post_processor": _bos_template(names.get("bos_token"), vocab) if add_bos else None}


def _byte_level(meta, path):
    """Vocabulary, merges and pre-tokenizer of a "gpt2" tokenizer."""
    pre = meta.get("tokenizer.ggml.pre", "default")
    if pre not in PRE_TOKENIZERS:
        raise ValueError(f"{path}: tokenizer.ggml.pre {pre!r} is not a pre-tokenizer lora_np knows; known: "
                         f"{', '.join(sorted(PRE_TOKENIZERS))}")
    vocab = {t if set(t) <= _BYTE_ALPHABET else bytes_as_chars(t.encode("utf-8")): i
             for i, t in enumerate(meta["tokenizer.ggml.tokens"])}
    merges = []
    for rank, line in enumerate(meta.get("tokenizer.ggml.merges") or []):
        pair = line.split(" ") if isinstance(line, str) else None
        if not pair or len(pair) != 2 or not all(pair):
            raise ValueError(f"{path}: tokenizer.ggml.merges[{rank}] must be two tokens separated by a space; "
                             f"got {line!r:.60}")
        merges.append(tuple(pair))
    regex = PRE_TOKENIZERS[pre]
    pre_tokenizer = PreTokenizer.gpt2() if regex is None else PreTokenizer(PreTokenizer.regex_then_bytes(regex))
    return {"vocab": vocab, "merges": merges, "pre_tokenizer": pre_tokenizer}


def _sentencepiece(meta):
    """Vocabulary, merges and stages of Gemma's SentencePiece-style BPE."""
    tokens = ["\u2581" * len(t) if " " in t and not t.strip() else t for t in meta["tokenizer.ggml.tokens"]]
    vocab = {t: i for i, t in enumerate(tokens)}
    return {"vocab": vocab, "merges": merges_in_vocabulary_order(tokens, vocab),
            "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"},
            "pre_tokenizer": {"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious",
                              "invert": False},
            "decoder": {"type": "Sequence", "decoders": [
                {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
                {"type": "ByteFallback"}, {"type": "Fuse"}]},
            "byte_fallback": True, "fuse_unk": True,
            "unk_token": tokens[meta["tokenizer.ggml.unknown_token_id"]]
            if "tokenizer.ggml.unknown_token_id" in meta else None}


def merges_in_vocabulary_order(tokens, vocab):
    """Every split of a token into two tokens, ranked by the token's position, the longer left half first."""
    merges = []
    for token in tokens:
        merges.extend((token[:i], token[i:]) for i in range(len(token) - 1, 0, -1)
                      if token[:i] in vocab and token[i:] in vocab)
    return merges


def _added(meta, vocab, byte_level):
    """Control tokens as special added tokens, user-defined ones as plain added tokens (as transformers adds them;
    a byte-level file's control token outside the byte alphabet is a llama.cpp mislabel and is skipped)."""
    added = []
    for i, (token, kind) in enumerate(zip(meta["tokenizer.ggml.tokens"], meta.get("tokenizer.ggml.token_type") or ())):
        if kind == CONTROL and (not byte_level or set(token) <= _BYTE_ALPHABET):
            added.append({"id": i, "content": token, "special": True})
        elif kind == USER_DEFINED and vocab.get(token) == i:
            added.append({"id": i, "content": token, "special": False})
    return added


def _bos_template(bos, vocab):
    if bos is None:
        return None
    return {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {bos: {"id": bos, "ids": [vocab[bos]], "tokens": [bos]}}}
