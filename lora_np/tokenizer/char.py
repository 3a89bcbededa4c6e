"""A character-level tokenizer: one token per distinct character, saved as JSON beside a checkpoint."""

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

    def encode(self, text):
        unknown = sorted(set(text) - set(self.index))
        if unknown:
            raise ValueError(f"characters {''.join(unknown)!r} are not in the vocabulary {''.join(self.chars)!r}")
        return np.array([self.index[c] for c in text], dtype=np.int64)

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
