"""GPT-2's byte-level BPE tokenizer, from scratch: bytes -> ranked merges -> token ids.

Three steps turn text into ids:

1. **Pre-tokenize.** GPT-2's pattern splits the text into words: contractions ('s 't 're ...), a run
   of letters or of digits or of other symbols with at most one leading space, and whitespace runs.
   Merges never cross a word boundary, so each word can be encoded (and cached) on its own.
2. **Bytes as characters.** A word's UTF-8 bytes are written as 256 printable characters
   (``BYTE_TO_UNICODE``: printable ASCII and Latin-1 stand for themselves, the other 68 bytes, space
   and control bytes among them, move to U+0100 onwards; a space becomes 'Ġ'). Every string is
   then a sequence of these characters, so there is no unknown token and nothing is lost.
3. **Merge.** ``merges`` is a ranked list of pairs learned at training time. Starting from single
   characters, repeatedly take the adjacent pair with the lowest rank and join every occurrence of
   it, left to right, until no adjacent pair has a rank. The pieces are looked up in the vocabulary.

``decode`` inverts it: ids -> byte strings -> UTF-8 text. ``train`` learns merges from a text: start
from the 256 bytes, and repeatedly merge the most frequent adjacent pair within words.

``<|endoftext|>`` (id 50256 in GPT-2) separates documents. ``encode(text)`` treats the literal
string "<|endoftext|>" in ``text`` as ordinary text, as Hugging Face's ``ByteLevelBPETokenizer``
does by default (user data cannot forge the separator); ``encode(text, allow_special=True)`` turns
it into the one special id, as ``GPT2TokenizerFast`` does. Append ``eot_token_id`` to close a document.

Files: ``vocab.json`` (token -> id) + ``merges.txt`` ("#version: 0.2", then one "a b" pair per line,
rank order) are Hugging Face's names; OpenAI's ``encoder.json`` + ``vocab.bpe`` hold the same.
"""

import heapq
import json
import operator
from collections import Counter
from pathlib import Path

import regex

from ..io.atomic import atomic_write_text, read_json

EOT = "<|endoftext|>"
GPT2_PATTERN = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")
FILE_NAMES = (("vocab.json", "merges.txt"), ("encoder.json", "vocab.bpe"))
MERGES_HEADER = "#version: 0.2"
_CACHE_LIMIT = 200_000
_NO_RANK = float("inf")


def bytes_to_unicode():
    """The 256 byte values -> 256 printable characters, in GPT-2's order (also their code-point order).

    Bytes that print as themselves ('!'..'~', '¡'..'¬', '®'..'ÿ') keep their code point; the
    other 68 (controls, space, soft hyphen, ...) take U+0100, U+0101, ... in byte order.
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    moved = [b for b in range(256) if b not in keep]
    table = {b: chr(b) for b in keep}
    table.update({b: chr(256 + n) for n, b in enumerate(moved)})
    return dict(sorted(table.items(), key=lambda item: ord(item[1])))


BYTE_TO_UNICODE = bytes_to_unicode()
UNICODE_TO_BYTE = {c: b for b, c in BYTE_TO_UNICODE.items()}
_BYTES_AS_CHARS = str.maketrans({chr(b): c for b, c in BYTE_TO_UNICODE.items()})


def byte_level(word):
    """A string's UTF-8 bytes, each written as its printable character: "héllo" -> "hÃ©llo"."""
    return word.encode("utf-8").decode("latin-1").translate(_BYTES_AS_CHARS)


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
    """``encode(text) -> list[int]``, ``decode(ids) -> str``; ``from_dir``, ``save``, ``train``.

    ``vocab`` maps byte-level token strings to ids 0..V-1 and must hold all 256 byte characters and
    "<|endoftext|>"; ``merges`` is the ranked list of (left, right) pairs.
    """

    def __init__(self, vocab, merges, source="vocab"):
        self.vocab = dict(vocab)
        self.merges = [tuple(m) for m in merges]
        _check_vocab(self.vocab, self.merges, source)
        self.ranks = {pair: rank for rank, pair in enumerate(self.merges)}
        self.id_to_token = [None] * len(self.vocab)
        for token, i in self.vocab.items():
            self.id_to_token[i] = token
        self.id_to_bytes = [_token_bytes(t) for t in self.id_to_token]
        self.eot_token_id = self.vocab[EOT]
        self._cache = {}

    @property
    def vocab_size(self):
        return len(self.vocab)

    def __repr__(self):
        return f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)})"

    # ---- encode / decode -------------------------------------------------------------------
    def encode_word(self, word):
        """The ids of one pre-tokenized word (cached: real text repeats its words)."""
        ids = self._cache.get(word)
        if ids is None:
            symbols = apply_merges(list(byte_level(word)), self.ranks)
            ids = [self.vocab[s] for s in symbols]
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[word] = ids
        return ids

    def encode(self, text, allow_special=False):
        """Token ids of ``text``. With ``allow_special``, each literal "<|endoftext|>" becomes ``eot_token_id``."""
        if not isinstance(text, str):
            raise TypeError(f"encode needs a str; got {type(text).__name__}")
        if allow_special and EOT in text:
            ids = []
            for i, part in enumerate(text.split(EOT)):
                if i:
                    ids.append(self.eot_token_id)
                ids.extend(self.encode(part))
            return ids
        ids = []
        for word in pre_tokenize(text):
            ids.extend(self.encode_word(word))
        return ids

    def decode(self, ids):
        """The text of ``ids``; a cut inside a multi-byte character shows as U+FFFD."""
        try:
            ids = [operator.index(i) for i in ids]
        except TypeError:
            raise TypeError(f"decode needs integer token ids; got {ids!r:.80}") from None
        if ids and not 0 <= min(ids) <= max(ids) < self.vocab_size:
            bad = next(i for i in ids if not 0 <= i < self.vocab_size)
            raise ValueError(f"decode: token id {bad} is not in [0, {self.vocab_size})")
        return b"".join([self.id_to_bytes[i] for i in ids]).decode("utf-8", errors="replace")

    # ---- files ----------------------------------------------------------------------------
    @classmethod
    def from_dir(cls, path):
        """Read vocab.json + merges.txt (Hugging Face) or encoder.json + vocab.bpe (OpenAI) from ``path``."""
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"tokenizer directory not found: {path}")
        present = [(path / v, path / m) for v, m in FILE_NAMES if (path / v).is_file() or (path / m).is_file()]
        complete = [(v, m) for v, m in present if v.is_file() and m.is_file()]
        if not complete:
            if present:
                v, m = present[0]
                missing, other = (m, v) if v.is_file() else (v, m)
                raise FileNotFoundError(f"tokenizer file not found: {missing} ({other.name} needs it)")
            raise FileNotFoundError(f"no BPE tokenizer files in {path}: expected vocab.json + merges.txt "
                                    f"(Hugging Face) or encoder.json + vocab.bpe (OpenAI)")
        vocab_file, merges_file = complete[0]
        return cls(read_json(vocab_file, "tokenizer vocabulary"), _read_merges(merges_file), source=str(vocab_file))

    def save(self, directory):
        """Write vocab.json + merges.txt (atomically) that ``tokenizers`` and ``transformers`` read."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        ordered = dict(sorted(self.vocab.items(), key=lambda item: item[1]))
        atomic_write_text(directory / "vocab.json", json.dumps(ordered, ensure_ascii=False) + "\n")
        atomic_write_text(directory / "merges.txt",
                          MERGES_HEADER + "\n" + "".join(f"{a} {b}\n" for a, b in self.merges))
        return directory

    # ---- training -------------------------------------------------------------------------
    @classmethod
    def train(cls, text, vocab_size, min_frequency=2):
        """Learn a byte-level BPE of ``vocab_size`` tokens from ``text``: 256 bytes, merges, "<|endoftext|>".

        Count GPT-2's words; then, merge after merge, join the adjacent pair that occurs most often
        (summed over words × their counts). Ties go to the pair whose (left id, right id) is
        smallest, which is Hugging Face's ``BpeTrainer`` rule, so both learn the same merges.
        Stops early when no pair occurs ``min_frequency`` times. Only the words holding the merged
        pair are recounted, and a heap finds the best pair, so a merge costs what it touches.
        """
        if not isinstance(text, str):
            raise TypeError(f"BPETokenizer.train needs a str; got {type(text).__name__}")
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 257:
            raise ValueError(f"vocab_size must be an int >= 257 (256 bytes + <|endoftext|>); got {vocab_size!r}")
        if isinstance(min_frequency, bool) or not isinstance(min_frequency, int) or min_frequency < 1:
            raise ValueError(f"min_frequency must be a positive int; got {min_frequency!r}")
        vocab = {c: i for i, c in enumerate(BYTE_TO_UNICODE.values())}
        word_counts = Counter(byte_level(w) for w in pre_tokenize(text))
        words = [[vocab[c] for c in w] for w in word_counts]
        freqs = list(word_counts.values())
        pair_counts, where = Counter(), {}
        for w, (word, freq) in enumerate(zip(words, freqs)):
            for pair in zip(word, word[1:]):
                pair_counts[pair] += freq
                where.setdefault(pair, set()).add(w)
        heap = [(-count, pair) for pair, count in pair_counts.items()]
        heapq.heapify(heap)
        tokens = list(vocab)
        merges = []
        while len(tokens) < vocab_size - 1 and heap:
            neg, pair = heapq.heappop(heap)
            count = pair_counts.get(pair, 0)
            if count != -neg:  # stale: counts of old pairs only fall, so push the current one back
                if count > 0:
                    heapq.heappush(heap, (-count, pair))
                continue
            if count < min_frequency:
                break
            new_id = len(tokens)
            tokens.append(tokens[pair[0]] + tokens[pair[1]])
            merges.append((tokens[pair[0]], tokens[pair[1]]))
            created = set()
            for w in where.pop(pair):
                old = words[w]
                new = _merge_ids(old, pair, new_id)
                if len(new) == len(old):
                    continue
                for p in zip(old, old[1:]):
                    pair_counts[p] -= freqs[w]
                for p in zip(new, new[1:]):
                    pair_counts[p] += freqs[w]
                    if new_id in p:
                        created.add(p)
                        where.setdefault(p, set()).add(w)
                words[w] = new
            del pair_counts[pair]
            for p in created:
                heapq.heappush(heap, (-pair_counts[p], p))
        vocab = {t: i for i, t in enumerate(tokens)}
        vocab[EOT] = len(vocab)
        return cls(vocab, merges, source="trained")


def _merge_ids(word, pair, new_id):
    """``word`` (a list of ids) with every occurrence of ``pair``, left to right, replaced by ``new_id``."""
    out, i = [], 0
    while i < len(word):
        if i < len(word) - 1 and word[i] == pair[0] and word[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def _token_bytes(token):
    """The bytes a vocabulary entry stands for (an added token outside the byte alphabet: its UTF-8)."""
    if all(c in UNICODE_TO_BYTE for c in token):
        return bytes(UNICODE_TO_BYTE[c] for c in token)
    return token.encode("utf-8")


def _read_merges(path):
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text: {exc}") from None
    merges = []
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\r")
        if not line or (number == 1 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"{path}, line {number}: expected two tokens separated by one space; got {line!r:.80}")
        merges.append((parts[0], parts[1]))
    return merges


def _check_vocab(vocab, merges, source):
    """Ids 0..V-1 each once; all 256 byte characters and <|endoftext|> present; merges inside the vocab."""
    ids = sorted(vocab.values()) if all(type(i) is int for i in vocab.values()) else None
    if ids is None or ids != list(range(len(vocab))):
        raise ValueError(f"{source}: token ids must be the integers 0..{len(vocab) - 1}, each used once")
    missing = [c for c in BYTE_TO_UNICODE.values() if c not in vocab]
    if missing:
        raise ValueError(f"{source}: {len(missing)} of the 256 byte tokens are missing (e.g. {missing[0]!r}); "
                         f"a byte-level BPE vocabulary holds every byte")
    if EOT not in vocab:
        raise ValueError(f"{source}: no {EOT!r} token; GPT-2 vocabularies end with it")
    for rank, (a, b) in enumerate(merges):
        if a not in vocab or b not in vocab or a + b not in vocab:
            raise ValueError(f"{source}: merge {rank} ({a!r} {b!r}) uses or makes a token that is not in the vocabulary")
