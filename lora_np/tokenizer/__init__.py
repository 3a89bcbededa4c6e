"""Tokenizers: characters for the embedded toy tasks; byte-level BPE (GPT-2, Llama 3, Qwen) for real text,
read from any model folder by ``load_tokenizer``; chat templates for conversations."""

from .bpe import BPETokenizer
from .char import CharTokenizer
from .loading import load_tokenizer

__all__ = ["BPETokenizer", "CharTokenizer", "load_tokenizer"]
