"""Learning a byte-level BPE from text: start from the 256 bytes, merge the most frequent pair.

Count the words (GPT-2's pre-tokenizer); then, merge after merge, join the adjacent pair that
occurs most often (summed over words × their counts). Ties go to the pair whose (left id, right id)
is smallest, which is Hugging Face's ``BpeTrainer`` rule, so both learn the same merges. Only the
words holding the merged pair are recounted, and a heap finds the best pair, so a merge costs what
it touches: a heap entry whose count has since fallen is stale, and is pushed back with its count.
"""

import heapq
from collections import Counter

from .byte_level import BYTE_TO_UNICODE, byte_level


class _PairCounts:
    """Words as id lists with their counts; how often each adjacent pair occurs; which words hold it."""

    def __init__(self, word_counts, vocab):
        self.words = [[vocab[c] for c in w] for w in word_counts]
        self.freqs = list(word_counts.values())
        self.count, self.where = Counter(), {}
        for w, (word, freq) in enumerate(zip(self.words, self.freqs)):
            for pair in zip(word, word[1:]):
                self.count[pair] += freq
                self.where.setdefault(pair, set()).add(w)
        self.heap = [(-count, pair) for pair, count in self.count.items()]
        heapq.heapify(self.heap)

    def pop_best(self):
        """(pair, count) of the most frequent pair (ties: smallest ids), or (None, 0) when none is left."""
        while self.heap:
            neg, pair = heapq.heappop(self.heap)
            count = self.count.get(pair, 0)
            if count == -neg:
                return pair, count
            if count > 0:  # stale: counts of old pairs only fall, so push the current one back
                heapq.heappush(self.heap, (-count, pair))
        return None, 0

    def merge(self, pair, new_id):
        """Replace ``pair`` by ``new_id`` in every word holding it; recount those words' pairs."""
        created = set()
        for w in self.where.pop(pair):
            old = self.words[w]
            new = merge_ids(old, pair, new_id)
            if len(new) == len(old):
                continue
            for p in zip(old, old[1:]):
                self.count[p] -= self.freqs[w]
            for p in zip(new, new[1:]):
                self.count[p] += self.freqs[w]
                if new_id in p:
                    created.add(p)
                    self.where.setdefault(p, set()).add(w)
            self.words[w] = new
        del self.count[pair]
        for p in created:
            heapq.heappush(self.heap, (-self.count[p], p))


def learn_bpe(words, n_tokens, min_frequency):
    """(tokens, merges): the 256 byte characters then up to ``n_tokens - 256`` merged ones, learned from
    ``words`` (the pre-tokenized text); stops early when no pair occurs ``min_frequency`` times."""
    tokens = list(BYTE_TO_UNICODE.values())
    pairs = _PairCounts(Counter(byte_level(w) for w in words), {c: i for i, c in enumerate(tokens)})
    merges = []
    while len(tokens) < n_tokens:
        pair, count = pairs.pop_best()
        if pair is None or count < min_frequency:
            break
        merges.append((tokens[pair[0]], tokens[pair[1]]))
        tokens.append(tokens[pair[0]] + tokens[pair[1]])
        pairs.merge(pair, len(tokens) - 1)
    return tokens, merges


def merge_ids(word, pair, new_id):
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
