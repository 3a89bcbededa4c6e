"""Embedded tasks, user text files, the character tokenizer and batching."""

from .dataset import TokenDataset, task_dataset, text_dataset
from .tasks import TASKS, VOCAB, make_lines
from ..tokenizer import CharTokenizer

__all__ = ["TokenDataset", "task_dataset", "text_dataset", "TASKS", "VOCAB", "make_lines", "CharTokenizer"]
