"""Tokenizers: characters for the embedded toy tasks; byte-level BPE (GPT-2, Llama 3, Qwen) for real text,
read from any model folder by ``load_tokenizer``; chat templates for conversations.

``GPT2_REGEX``, ``QWEN_REGEX`` (Qwen2/2.5/3) and ``LLAMA3_REGEX`` are the known split patterns, for
``BPETokenizer.from_tiktoken(path, pattern=QWEN_REGEX)``: a tiktoken rank file does not hold its pattern."""

from .bpe import BPETokenizer
from .char import CharTokenizer
from .loading import load_tokenizer
from .pipeline import GPT2_REGEX, LLAMA3_REGEX, QWEN_REGEX

__all__ = ["BPETokenizer", "CharTokenizer", "load_tokenizer", "GPT2_REGEX", "QWEN_REGEX", "LLAMA3_REGEX"]
