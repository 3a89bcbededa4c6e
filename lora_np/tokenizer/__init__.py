"""Tokenizers: characters for the embedded toy tasks."""

from .char import CharTokenizer

__all__ = ["CharTokenizer"]
