"""Stage 3, the model: one pre-tokenized word -> token ids, by ranked merges (byte-pair encoding).

1. **Symbols.** A byte-level BPE (GPT-2, Llama 3, Qwen, SmolLM2) writes the word's UTF-8 bytes as 256
   printable characters (``byte_level.py``); a SentencePiece-style BPE (Gemma) keeps its characters.
   A symbol the vocabulary lacks becomes, as Hugging Face ``tokenizers`` does it: its UTF-8 bytes as
   "<0xNN>" tokens (``byte_fallback``), else the ``unk_token`` (runs fused into one with
   ``fuse_unk``), else nothing: it is dropped, and its neighbours meet (a byte-level vocabulary may
   lack some byte tokens, as SmolLM2's lacks 21).
2. **Merge.** ``merges`` is a ranked list of pairs. Repeatedly take the adjacent pair with the lowest
   rank and join every occurrence of it, left to right, until no adjacent pair has a rank. The pieces
   are looked up in the vocabulary. With ``ignore_merges`` (Llama 3, tiktoken) a word that is itself in
   the vocabulary is taken whole.

Merges never cross a word, so each word is encoded (and cached) on its own.
"""

import heapq

from .byte_level import BYTE_TO_UNICODE, byte_level
from .pre_tokenizers import PreTokenizer

_CACHE_LIMIT = 200_000
_NO_RANK = float("inf")
_LONG_WORD = 64  # symbols from which the heap's O(n log n) beats rescanning every pair per merge

__all__ = ["BPE", "BYTE_TO_UNICODE", "apply_merges", "apply_merges_by_position", "byte_level", "check_vocab",
           "pre_tokenize"]

pre_tokenize = PreTokenizer.gpt2()  # GPT-2's words: " Hello", ",", " world", "'s", "  " ... (notebook 08's name)


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


def apply_merges_by_position(symbols, ranks):
    """``tokenizers``' own order, in O(n log n): a heap of (rank, position) pops the lowest-ranked pair,
    leftmost first, and merges that one occurrence; the pairs it forms with its neighbours join the heap.

    It equals ``apply_merges`` when the merges are ``well_ordered`` (a learned BPE's are); merges recovered
    from a SentencePiece vocabulary need not be (Gemma's), and long words (a SentencePiece text has no
    spaces to split at) need its speed. ``next_of``/``prev_of`` link the
    symbols still alive.
    """
    n = len(symbols)
    symbols, prev_of, next_of = list(symbols), list(range(-1, n - 1)), list(range(1, n + 1))
    heap = [(ranks[pair], i) for i, pair in enumerate(zip(symbols, symbols[1:])) if pair in ranks]
    heapq.heapify(heap)
    while heap:
        rank, i = heapq.heappop(heap)
        j = next_of[i]
        if symbols[i] is None or j >= n or ranks.get((symbols[i], symbols[j])) != rank:
            continue  # stale: one side was merged away since the pair was pushed
        symbols[i], symbols[j] = symbols[i] + symbols[j], None
        next_of[i] = next_of[j]
        if next_of[i] < n:
            prev_of[next_of[i]] = i
        for a, b in ((prev_of[i], i), (i, next_of[i])):
            if a >= 0 and b < n and (symbols[a], symbols[b]) in ranks:
                heapq.heappush(heap, (ranks[symbols[a], symbols[b]], a))
    return [s for s in symbols if s is not None]


def well_ordered(merges):
    """True when every merge that uses a token ranks after every merge that makes it: then a merge never
    forms a pair ranked before its own, and merging all occurrences at once (``apply_merges``) is
    ``tokenizers``' one-at-a-time order (``apply_merges_by_position``)."""
    last_made = {a + b: rank for rank, (a, b) in enumerate(merges)}  # the last merge making each token
    return all(last_made.get(a, -1) < rank and last_made.get(b, -1) < rank for rank, (a, b) in enumerate(merges))


class BPE:
    """``vocab`` {token: id 0..V-1}, ranked ``merges`` [(left, right)], and how a missing symbol is
    handled (see the module docstring). ``encode_word(word) -> ids``."""

    def __init__(self, vocab, merges, source="vocab", *, byte_level=True, ignore_merges=False, byte_fallback=False,
                 unk_token=None, fuse_unk=False):
        self.vocab = dict(vocab)
        self.merges = [tuple(m) for m in merges]
        check_vocab(self.vocab, self.merges, source)
        if unk_token is not None and unk_token not in self.vocab:
            raise ValueError(f"{source}: the BPE model's unk_token {unk_token!r} is not in the vocabulary")
        self.ranks = {pair: rank for rank, pair in enumerate(self.merges)}
        self.well_ordered = well_ordered(self.merges)
        self.byte_level, self.ignore_merges = bool(byte_level), bool(ignore_merges)
        self.byte_fallback, self.unk_token, self.fuse_unk = bool(byte_fallback), unk_token, bool(fuse_unk)
        self._cache = {}

    def __len__(self):
        return len(self.vocab)

    def encode_word(self, word):
        """The ids of one pre-tokenized word (cached: real text repeats its words)."""
        ids = self._cache.get(word)
        if ids is None:
            ids = self._encode(byte_level(word) if self.byte_level else word)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[word] = ids
        return ids

    def _encode(self, chars):
        vocab = self.vocab
        if self.ignore_merges and chars in vocab:
            return [vocab[chars]]
        merge = apply_merges if self.well_ordered and len(chars) < _LONG_WORD else apply_merges_by_position
        try:
            return [vocab[s] for s in merge(list(chars), self.ranks)]
        except KeyError:  # a symbol the vocabulary lacks: merges must then see its replacement
            return [vocab[s] for s in merge(self._known_symbols(chars), self.ranks)]

    def _known_symbols(self, chars):
        """``chars`` as vocabulary symbols, in ``tokenizers``' order: byte tokens, a pending unk, or nothing."""
        symbols, unk = [], 0  # unk: how many missing symbols wait to become unk tokens
        for c in chars:
            if c in self.vocab:
                symbols.extend([self.unk_token] * unk)
                symbols.append(c)
                unk = 0
                continue
            pieces = [f"<0x{b:02X}>" for b in c.encode("utf-8")] if self.byte_fallback else None
            if pieces and all(p in self.vocab for p in pieces):
                symbols.extend(pieces)
            elif self.unk_token is not None:
                if unk and not self.fuse_unk:
                    symbols.append(self.unk_token)
                unk = 1
        return symbols + [self.unk_token] * unk


def check_vocab(vocab, merges, source):
    """Ids 0..V-1 each once; merges use and make tokens of the vocabulary."""
    if not isinstance(vocab, dict):
        raise ValueError(f"{source}: the vocabulary must be a JSON object (token -> id)")
    ids = sorted(vocab.values()) if all(type(i) is int for i in vocab.values()) else None
    if ids is None or ids != list(range(len(vocab))):
        raise ValueError(f"{source}: token ids must be the integers 0..{len(vocab) - 1}, each used once")
    for rank, (a, b) in enumerate(merges):
        if a not in vocab or b not in vocab or a + b not in vocab:
            raise ValueError(f"{source}: merge {rank} ({a!r} {b!r}) uses or makes a token that is not in the "
                             f"vocabulary")
