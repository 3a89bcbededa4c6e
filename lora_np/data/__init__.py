"""Embedded tasks, user text and JSONL files (prompt/completion or chat conversations), the character
tokenizer and batching; greedy chat answers and their exact-match score."""

from .chat import chat_dataset, conversation_tokens, is_chat_jsonl
from .chat_answers import answer_tokens, chat_prompt_ids, exact_match, greedy_answers, greedy_chat_answers
from .dataset import TokenDataset, task_dataset
from .tasks import TASKS, VOCAB, make_lines
from .text_files import encode_text, file_dataset, jsonl_dataset, text_dataset
from ..tokenizer import CharTokenizer

__all__ = ["TokenDataset", "task_dataset", "text_dataset", "jsonl_dataset", "file_dataset", "encode_text",
           "chat_dataset", "conversation_tokens", "is_chat_jsonl",
           "chat_prompt_ids", "greedy_answers", "greedy_chat_answers", "exact_match", "answer_tokens",
           "TASKS", "VOCAB", "make_lines", "CharTokenizer"]
