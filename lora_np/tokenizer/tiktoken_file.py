"""tiktoken rank files (OpenAI's cl100k/o200k, Llama 3's, Qwen's ``qwen.tiktoken``): one line per
token, ``base64(token bytes) rank``, the rank also being the token's id.

The ranks *are* the merges' order: tiktoken joins, in a word, the adjacent pair whose join has the
lowest rank. To run the same merges as a vocabulary + ranked merge list (what ``tokenizer.json`` and
``BPETokenizer`` hold), every way a token splits into two tokens becomes a merge, ranked by the
token's rank and then by the ranks of the two halves — the rule transformers' ``TikTokenConverter``
uses, so both give the same ``tokenizer.json``.
"""

import base64
import binascii
from pathlib import Path

from .byte_level import bytes_as_chars


def read_tiktoken_ranks(path):
    """{token bytes: rank} from a rank file; ranks must be 0..N-1, each once, and hold all 256 bytes."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tiktoken rank file not found: {path}")
    ranks = {}
    for number, line in enumerate(path.read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            token, rank = base64.b64decode(parts[0], validate=True), int(parts[1])
            if len(parts) != 2:
                raise ValueError
        except (ValueError, IndexError, binascii.Error):
            raise ValueError(f"{path}, line {number}: expected 'base64-token rank'; got {line[:80]!r}") from None
        if token in ranks:
            raise ValueError(f"{path}, line {number}: token {token!r} appears twice")
        ranks[token] = rank
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ValueError(f"{path}: ranks must be the integers 0..{len(ranks) - 1}, each used once")
    return ranks


def merges_from_ranks(ranks):
    """The ranked merge list that reproduces tiktoken's merging with these ranks (see the module docstring)."""
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        splits = [(token[:i], token[i:]) for i in range(1, len(token)) if token[:i] in ranks and token[i:] in ranks]
        splits.sort(key=lambda pair: (ranks[pair[0]], ranks[pair[1]]))
        merges.extend((bytes_as_chars(a), bytes_as_chars(b)) for a, b in splits)
    return merges


def read_tiktoken(path):
    """(vocab, merges): the byte-level vocabulary {token string: id} and its merges."""
    ranks = read_tiktoken_ranks(path)
    return {bytes_as_chars(token): rank for token, rank in ranks.items()}, merges_from_ranks(ranks)
