"""A character-level tokenizer: one token per distinct character, saved as JSON beside a checkpoint.

A character outside the vocabulary has no id. ``encode(text, unknown=...)`` says what happens to
it: ``"error"`` (the default) names the characters; ``"drop"`` removes them; ``"map:X"`` replaces
each by the vocabulary's character X.
"""

from pathlib import Path

import numpy as np

from ..io.atomic import atomic_write_json, read_json

VOCAB_FILE = "char_vocab.json"


class CharTokenizer:
    def __init__(self, chars):
        chars = list(chars)
        if not chars or not all(isinstance(c, str) and len(c) == 1 for c in chars) or len(set(chars)) != len(chars):
            raise ValueError(f"a character vocabulary needs distinct single characters; got {chars!r:.80}")
        self.chars = chars
        self.index = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text):
        return cls(sorted(set(text)))

    @property
    def vocab_size(self):
        return len(self.chars)

    def encode(self, text, unknown="error"):
        """Ids of ``text``'s characters; ``unknown`` is the policy for characters not in the vocabulary."""
        replacement = self._check_policy(unknown)
        missing = sorted(set(text) - set(self.index))
        if missing and unknown == "error":
            raise ValueError(f"characters {''.join(missing)!r} are not in the vocabulary {''.join(self.chars)!r}")
        ids = [self.index.get(c, replacement) for c in text]
        return np.array([i for i in ids if i is not None], dtype=np.int64)

    def _check_policy(self, unknown):
        """The id that replaces an unknown character (None: drop it, or raise)."""
        if unknown in ("error", "drop"):
            return None
        if isinstance(unknown, str) and unknown.startswith("map:") and len(unknown) == 5:
            if unknown[4] not in self.index:
                raise ValueError(f"unknown-character policy {unknown!r}: {unknown[4]!r} is not in the vocabulary "
                                 f"{''.join(self.chars)!r}")
            return self.index[unknown[4]]
        raise ValueError(f"unknown-character policy must be 'error', 'drop' or 'map:X' (X one character of the "
                         f"vocabulary); got {unknown!r}")

    def decode(self, ids):
        return "".join(self.chars[int(i)] for i in np.asarray(ids).reshape(-1))

    def save(self, directory):
        Path(directory).mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(directory) / VOCAB_FILE, {"type": "char", "chars": self.chars})

    @classmethod
    def load(cls, directory):
        obj = read_json(Path(directory) / VOCAB_FILE, "character vocabulary")
        if obj.get("type") != "char" or not isinstance(obj.get("chars"), list):
            raise ValueError(f"{Path(directory) / VOCAB_FILE}: expected {{'type': 'char', 'chars': [...]}}")
        return cls(obj["chars"])
