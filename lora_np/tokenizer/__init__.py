"""Tokenizers: characters for the embedded toy tasks, GPT-2's byte-level BPE for real text."""

from .bpe import BPETokenizer
from .char import CharTokenizer

__all__ = ["BPETokenizer", "CharTokenizer"]
