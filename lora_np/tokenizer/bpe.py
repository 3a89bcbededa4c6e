"""Byte-level BPE, from scratch: text -> words -> bytes -> ranked merges -> token ids.

The same four steps serve GPT-2, Llama 3 and Qwen; only the files differ (``loading.py``):

1. **Added tokens.** Control strings such as "<|im_start|>" are cut out of the text first and map
   to their ids directly. A *special* one is matched only with ``encode(text, allow_special=True)``
   (a chat template's own markers); by default its literal text is ordinary text, so user data
   cannot forge a document separator or a turn boundary. Non-special added tokens always match.
2. **Normalize, pre-tokenize** (``pipeline.py``): optional NFC, then a regex (GPT-2's or the
   model's) splits the text into words. Merges never cross a word boundary, so each word is encoded
   (and cached) on its own.
3. **Bytes as characters** (``byte_level.py``): a word's UTF-8 bytes written as 256 printable
   characters, so there is no unknown token and nothing is lost.
4. **Merge.** ``merges`` is a ranked list of pairs. Starting from single characters, repeatedly
   take the adjacent pair with the lowest rank and join every occurrence of it, left to right, until
   no adjacent pair has a rank. The pieces are looked up in the vocabulary. With ``ignore_merges``
   (Llama 3, tiktoken) a word that is itself in the vocabulary is taken whole.

``decode`` inverts it: ids -> byte strings -> UTF-8 text. ``train`` learns merges from a text
(``bpe_training.py``). GPT-2's "<|endoftext|>" (id 50256) separates documents; ``eot_token_id`` is
the end-of-sequence id (``eos_token_id``), which the data code appends to close a document.
"""

import bisect
import itertools
import operator
import re

import regex

from . import tokenizer_json
from .bpe_training import learn_bpe
from .byte_level import BYTE_TO_UNICODE, byte_level, token_bytes
from .chat_template import end_of_turn_id, render_chat
from .gpt2_files import FILE_NAMES, read_gpt2_files, write_gpt2_files
from .pipeline import GPT2_REGEX, Normalizer, PreTokenizer
from .tiktoken_file import read_tiktoken

EOT = "<|endoftext|>"
GPT2_PATTERN = regex.compile(GPT2_REGEX)
SPECIAL_NAMES = ("bos_token", "eos_token", "pad_token", "unk_token")
_CACHE_LIMIT = 200_000
_NO_RANK = float("inf")
_SURROGATE = re.compile("[\ud800-\udfff]")

__all__ = ["BPETokenizer", "EOT", "FILE_NAMES", "BYTE_TO_UNICODE", "apply_merges", "byte_level", "pre_tokenize"]


def pre_tokenize(text):
    """GPT-2's words: " Hello", ",", " world", "'s", "  " ...; concatenated they give ``text`` back."""
    return GPT2_PATTERN.findall(text)


def apply_merges(symbols, ranks):
    """Merge a word's symbols by rank: lowest-ranked adjacent pair first, all its occurrences left to right.

    ``symbols`` is a list of strings (initially one character each); ``ranks`` maps a pair to its
    rank. Returns the final list of symbols.
    """
    while len(symbols) > 1:
        pair = min(zip(symbols, symbols[1:]), key=lambda p: ranks.get(p, _NO_RANK))
        if pair not in ranks:
            break
        first, second = pair
        merged, i = [], 0
        while i < len(symbols):
            if i < len(symbols) - 1 and symbols[i] == first and symbols[i + 1] == second:
                merged.append(first + second)
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
    return symbols


class BPETokenizer:
    """``encode(text) -> list[int]``, ``decode(ids) -> str``; ``from_dir``, ``from_tiktoken``,
    ``from_tokenizer_json``, ``save``, ``train``, ``apply_chat_template``.

    ``vocab`` maps byte-level token strings to ids 0..V-1 and holds all 256 byte characters;
    ``merges`` is the ranked list of (left, right) pairs. ``added_tokens`` are tokenizer.json's
    [{"id", "content", "special"}, ...] (default: GPT-2's "<|endoftext|>" when the vocabulary has it);
    ``special_tokens_map`` names the bos/eos/pad/unk tokens; ``chat_template`` is a Jinja string.
    """

    def __init__(self, vocab, merges, source="vocab", *, added_tokens=None, normalizer=None, pre_tokenizer=None,
                 post_processor=None, ignore_merges=False, special_tokens_map=None, chat_template=None):
        self.vocab = dict(vocab)
        self.merges = [tuple(m) for m in merges]
        _check_vocab(self.vocab, self.merges, source)
        self.ranks = {pair: rank for rank, pair in enumerate(self.merges)}
        if added_tokens is None:
            added_tokens = [{"id": self.vocab[EOT], "content": EOT, "special": True}] if EOT in self.vocab else []
        self.added_tokens = _check_added(added_tokens, self.vocab, source)
        self.normalizer = normalizer if isinstance(normalizer, Normalizer) else Normalizer(normalizer)
        self.pre_tokenizer = pre_tokenizer if isinstance(pre_tokenizer, PreTokenizer) else (
            PreTokenizer(pre_tokenizer) if pre_tokenizer is not None else PreTokenizer.gpt2())
        self.ignore_merges = bool(ignore_merges)
        if special_tokens_map is None:  # GPT-2's convention, as its tokenizer classes default to
            has_eot = EOT in self.vocab or any(t["content"] == EOT for t in self.added_tokens)
            special_tokens_map = {"bos_token": EOT, "eos_token": EOT, "unk_token": EOT} if has_eot else {}
        self.special_tokens_map = {k: v for k, v in special_tokens_map.items() if v is not None}
        self.chat_template = chat_template
        self._build_tables()
        self.post_processor = post_processor
        self.template_ids = tokenizer_json.post_processor_ids(post_processor, self.token_to_id)
        self._cache, self._id_to_token = {}, None

    def _build_tables(self):
        """id -> bytes for decode; the regexes that cut added tokens out of a text."""
        added_ids = {t["id"]: t["content"] for t in self.added_tokens}
        self.id_to_bytes = [None] * (max([len(self.vocab) - 1, *added_ids]) + 1)
        for token, i in self.vocab.items():
            self.id_to_bytes[i] = token_bytes(token)
        for i, content in added_ids.items():
            self.id_to_bytes[i] = content.encode("utf-8")
        self.added_ids = {t["content"]: t["id"] for t in self.added_tokens}
        self.special_ids = {t["id"] for t in self.added_tokens if t["special"]}
        self._added_re = {allow: _alternation([t["content"] for t in self.added_tokens if allow or not t["special"]])
                          for allow in (False, True)}

    # ---- ids of named tokens -------------------------------------------------------------
    @property
    def vocab_size(self):
        """One more than the largest id: the rows a model's embedding needs."""
        return len(self.id_to_bytes)

    def token_to_id(self, token):
        """The id of an added token or a vocabulary entry (None if it is neither)."""
        return self.added_ids[token] if token in self.added_ids else self.vocab.get(token)

    def id_to_token(self, i):
        """The added token or vocabulary entry (byte-level characters) with id ``i``."""
        if self._id_to_token is None:
            self._id_to_token = {j: t for t, j in self.vocab.items()}
            self._id_to_token.update({j: t for t, j in self.added_ids.items()})
        return self._id_to_token[i]

    def _named_id(self, name):
        token = self.special_tokens_map.get(name)
        return None if token is None else self.token_to_id(token)

    eos_token_id = property(lambda self: self._named_id("eos_token"), doc="End of sequence (None if unnamed).")
    bos_token_id = property(lambda self: self._named_id("bos_token"), doc="Beginning of sequence (None if unnamed).")
    pad_token_id = property(lambda self: self._named_id("pad_token"), doc="Padding (None if unnamed).")
    eot_token_id = property(lambda self: self._named_id("eos_token"), doc="GPT-2's name for eos_token_id.")
    end_of_turn_id = property(end_of_turn_id, doc="The token closing an assistant turn (chat_template.py).")

    def __repr__(self):
        return f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)})"

    # ---- encode / decode -------------------------------------------------------------------
    def encode_word(self, word):
        """The ids of one pre-tokenized word (cached: real text repeats its words)."""
        ids = self._cache.get(word)
        if ids is None:
            chars = byte_level(word)
            if self.ignore_merges and chars in self.vocab:
                ids = [self.vocab[chars]]
            else:
                ids = [self.vocab[s] for s in apply_merges(list(chars), self.ranks)]
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[word] = ids
        return ids

    def _segments(self, text, allow_special):
        """(start, text, None) for ordinary text, (start, content, id) for an added token, in order."""
        _check_text(text)
        pattern = self._added_re[bool(allow_special)]
        parts = pattern.split(text) if pattern is not None else [text]
        start = 0
        for i, part in enumerate(parts):
            if part:
                yield start, part, (self.added_ids[part] if i % 2 else None)
            start += len(part)

    def encode(self, text, allow_special=False, add_special_tokens=False):
        """Token ids of ``text``. ``allow_special``: special tokens written in the text become their ids
        (as ``tokenizers`` does); ``add_special_tokens``: the post-processor's tokens around it (Llama 3's bos)."""
        ids = []
        for _, part, token_id in self._segments(text, allow_special):
            if token_id is not None:
                ids.append(token_id)
                continue
            for word in self.pre_tokenizer(self.normalizer(part)):
                ids.extend(self.encode_word(word))
        if add_special_tokens:
            prefix, suffix = self.template_ids
            ids = [*prefix, *ids, *suffix]
        return ids

    def encode_with_spans(self, text, allow_special=False):
        """(ids, spans): each token's (start, end) character range in ``text``, for loss masks over spans.

        A token that covers part of a multi-byte character spans the whole character. Where NFC changes
        a line, each token of that line spans the whole line (positions inside it are not kept).
        """
        ids, spans = [], []
        for start, part, token_id in self._segments(text, allow_special):
            if token_id is not None:
                ids.append(token_id)
                spans.append((start, start + len(part)))
                continue
            normal, to_raw = _normalized_with_positions(part, self.normalizer)
            at = 0
            for word in self.pre_tokenizer(normal):
                word_ids = self.encode_word(word)
                ids.extend(word_ids)
                spans.extend((start + to_raw[a][0], start + to_raw[b - 1][1])
                             for a, b in _char_spans(word, word_ids, self.id_to_bytes, at))
                at += len(word)
        return ids, spans

    def decode(self, ids, skip_special=False):
        """The text of ``ids``; a cut inside a multi-byte character shows as U+FFFD."""
        try:
            ids = [operator.index(i) for i in ids]
        except TypeError:
            raise TypeError(f"decode needs integer token ids; got {ids!r:.80}") from None
        bad = [i for i in ids if not 0 <= i < self.vocab_size or self.id_to_bytes[i] is None] if ids else []
        if bad:
            raise ValueError(f"decode: token id {bad[0]} is not in [0, {self.vocab_size})"
                             + (" (no token has it)" if 0 <= bad[0] < self.vocab_size else ""))
        if skip_special:
            ids = [i for i in ids if i not in self.special_ids]
        return b"".join([self.id_to_bytes[i] for i in ids]).decode("utf-8", errors="replace")

    def apply_chat_template(self, messages, add_generation_prompt=False, tokenize=True, **kwargs):
        """The folder's chat template rendered for ``messages`` (see ``chat_template.py``); its ids
        (special tokens in the rendering are tokens, as transformers encodes it), or the text."""
        text = render_chat(self.chat_template, messages, add_generation_prompt,
                           {**self.special_tokens_map, **kwargs})
        return self.encode(text, allow_special=True) if tokenize else text

    # ---- files ----------------------------------------------------------------------------
    @classmethod
    def from_dir(cls, path):
        """Read vocab.json + merges.txt (Hugging Face) or encoder.json + vocab.bpe (OpenAI) from ``path``."""
        vocab, merges, vocab_file = read_gpt2_files(path)
        _check_vocab(vocab, merges, vocab_file)
        if EOT not in vocab:
            raise ValueError(f"{vocab_file}: no {EOT!r} token; GPT-2 vocabularies end with it")
        return cls(vocab, merges, source=str(vocab_file))

    @classmethod
    def from_tiktoken(cls, path, pattern, special_tokens=None):
        """A tiktoken rank file (``base64 rank`` lines) with its split ``pattern`` (the file does not hold
        it): ``lora_np.tokenizer`` exports the known ones, ``GPT2_REGEX``, ``QWEN_REGEX`` (Qwen2/2.5/3) and
        ``LLAMA3_REGEX``. ``special_tokens`` {content: id} are the added special tokens.

            from lora_np.tokenizer import BPETokenizer, QWEN_REGEX
            tok = BPETokenizer.from_tiktoken("qwen.tiktoken", pattern=QWEN_REGEX)"""
        vocab, merges = read_tiktoken(path)
        added = [{"id": i, "content": t, "special": True} for t, i in (special_tokens or {}).items()]
        split = {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False}
        pre = {"type": "Sequence", "pretokenizers": [
            split, {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
        return cls(vocab, merges, source=str(path), added_tokens=added, pre_tokenizer=pre, ignore_merges=True,
                   special_tokens_map={})

    @classmethod
    def from_tokenizer_json(cls, path):
        """Hugging Face's one-file ``tokenizer.json`` (see ``tokenizer_json.py`` for what is read)."""
        return cls(**tokenizer_json.read_tokenizer_json(path))

    def is_gpt2_kind(self):
        """True when GPT-2's two files say everything: GPT-2's pre-tokenizer, no normalizer or extras."""
        return (self.pre_tokenizer.json == PreTokenizer.gpt2().json and self.normalizer.json is None
                and not self.ignore_merges and self.post_processor is None and self.chat_template is None
                and [t["content"] for t in self.added_tokens] in ([], [EOT]))

    def save(self, directory):
        """GPT-2's kind: vocab.json + merges.txt; any other: tokenizer.json + tokenizer_config.json.
        Files are written atomically, and ``tokenizers``/``transformers`` read them back."""
        directory = tokenizer_json.make_directory(directory)
        if self.is_gpt2_kind():
            write_gpt2_files(directory, self.vocab, self.merges)
        else:
            tokenizer_json.write_tokenizer_files(directory, self)
        return directory

    @classmethod
    def train(cls, text, vocab_size, min_frequency=2):
        """Learn a byte-level BPE of ``vocab_size`` tokens from ``text``: 256 bytes, merges, "<|endoftext|>"
        (``bpe_training.py``: the same merges as Hugging Face's ``BpeTrainer``)."""
        if not isinstance(text, str):
            raise TypeError(f"BPETokenizer.train needs a str; got {type(text).__name__}")
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 257:
            raise ValueError(f"vocab_size must be an int >= 257 (256 bytes + <|endoftext|>); got {vocab_size!r}")
        if isinstance(min_frequency, bool) or not isinstance(min_frequency, int) or min_frequency < 1:
            raise ValueError(f"min_frequency must be a positive int; got {min_frequency!r}")
        _check_text(text)
        tokens, merges = learn_bpe(pre_tokenize(text), vocab_size - 1, min_frequency)
        return cls({t: i for i, t in enumerate([*tokens, EOT])}, merges, source="trained")


def _check_text(text):
    if not isinstance(text, str):
        raise TypeError(f"encode needs a str; got {type(text).__name__}")
    bad = _SURROGATE.search(text)
    if bad:
        raise ValueError(f"text holds a lone surrogate U+{ord(bad.group()):04X} at index {bad.start()}, which is "
                         f"not Unicode text and has no UTF-8 bytes; fix the source (e.g. decode its bytes with "
                         f"errors='replace')")


def _alternation(contents):
    """One regex matching any of ``contents``, longest first (leftmost-longest, as tokenizers matches)."""
    if not contents:
        return None
    return re.compile("(" + "|".join(re.escape(c) for c in sorted(contents, key=len, reverse=True)) + ")")


def _normalized_with_positions(text, normalizer):
    """(normalized text, to_raw): ``to_raw[i]`` is the (start, end) in ``text`` of normalized character i.

    NFC never joins across a newline, so lines are normalized one by one; an unchanged line maps
    character to character, a changed one maps each of its characters to the whole line.
    """
    if normalizer(text) == text:
        return text, [(i, i + 1) for i in range(len(text))]
    normal, to_raw, start = [], [], 0
    for line in text.splitlines(keepends=True):
        done = normalizer(line)
        normal.append(done)
        same = done == line
        to_raw.extend((start + i, start + i + 1) if same else (start, start + len(line)) for i in range(len(done)))
        start += len(line)
    return "".join(normal), to_raw


def _char_spans(word, ids, id_to_bytes, at):
    """Each token's [start, end) in characters of the text ``word`` starts at position ``at`` of."""
    char_ends = list(itertools.accumulate(len(c.encode("utf-8")) for c in word))  # byte where char i ends
    spans, b = [], 0
    for i in ids:
        nb = b + len(id_to_bytes[i])
        spans.append((at + bisect.bisect_right(char_ends, b), at + bisect.bisect_left(char_ends, nb) + 1))
        b = nb
    return spans


def _check_vocab(vocab, merges, source):
    """Ids 0..V-1 each once; all 256 byte characters present; merges inside the vocab."""
    if not isinstance(vocab, dict):
        raise ValueError(f"{source}: the vocabulary must be a JSON object (token -> id)")
    ids = sorted(vocab.values()) if all(type(i) is int for i in vocab.values()) else None
    if ids is None or ids != list(range(len(vocab))):
        raise ValueError(f"{source}: token ids must be the integers 0..{len(vocab) - 1}, each used once")
    missing = [c for c in BYTE_TO_UNICODE.values() if c not in vocab]
    if missing:
        raise ValueError(f"{source}: {len(missing)} of the 256 byte tokens are missing (e.g. {missing[0]!r}); "
                         f"a byte-level BPE vocabulary holds every byte")
    for rank, (a, b) in enumerate(merges):
        if a not in vocab or b not in vocab or a + b not in vocab:
            raise ValueError(f"{source}: merge {rank} ({a!r} {b!r}) uses or makes a token that is not in the vocabulary")


def _check_added(added, vocab, source):
    """[{"id", "content", "special"}]: a new id past the vocabulary, or the id its content has in it."""
    out, seen = [], {}
    for t in added:
        if not (isinstance(t, dict) and type(t.get("id")) is int and t["id"] >= 0
                and isinstance(t.get("content"), str) and t["content"]):
            raise ValueError(f"{source}: an added token needs an int 'id' >= 0 and a non-empty 'content'; got {t!r:.80}")
        content, i = t["content"], t["id"]
        if (i < len(vocab) and vocab.get(content) != i) or (content in vocab and vocab[content] != i):
            raise ValueError(f"{source}: added token {content!r} has id {i}, which the vocabulary gives another token")
        if seen.setdefault(i, content) != content:
            raise ValueError(f"{source}: added tokens {seen[i]!r} and {content!r} share id {i}")
        out.append({"id": i, "content": content, "special": bool(t.get("special", False))})
    return out
