"""Tokenizers: characters for the embedded toy tasks; BPE for real text, as Hugging Face ``tokenizers``
builds it (normalizer -> pre-tokenizer -> model -> post-processor -> decoder, plus the added vocabulary:
``tokenizer.py``): byte-level (GPT-2, Llama 3, Qwen, SmolLM2) and SentencePiece-style (Gemma), read from
any model folder or GGUF file by ``load_tokenizer``; chat templates for conversations.

``GPT2_REGEX``, ``QWEN_REGEX`` (Qwen2/2.5/3) and ``LLAMA3_REGEX`` are the known split patterns, for
``BPETokenizer.from_tiktoken(path, pattern=QWEN_REGEX)``: a tiktoken rank file does not hold its pattern."""

from .bpe_tokenizer import BPETokenizer
from .char import CharTokenizer
from .loading import load_tokenizer
from .pre_tokenizers import GPT2_REGEX, LLAMA3_REGEX, QWEN_REGEX
from .tokenizer import Tokenizer

__all__ = ["BPETokenizer", "CharTokenizer", "Tokenizer", "load_tokenizer", "GPT2_REGEX", "QWEN_REGEX",
           "LLAMA3_REGEX"]
