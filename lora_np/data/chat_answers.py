"""Greedy answers to prompts, and their exact-match accuracy: how the real demo's task is scored.

``greedy_answers`` decodes encoded prompts greedily until a stop token. Prompts of the same length
in tokens are decoded together as one batch (no padding, so each row is exactly what it would be
alone). ``greedy_chat_answers`` asks each prompt as one user turn of the model's chat template
(``chat_prompt_ids``, as transformers' ``apply_chat_template(..., add_generation_prompt=True)``) and
stops at its end-of-turn token. An answer is right when it equals the expected text after stripping
surrounding whitespace. The CLI's ``real-demo`` and ``chat``, and notebook 08, all score and prompt
through these functions.
"""

import numpy as np

from ..tokenizer import BPETokenizer

MAX_BATCH = 64


def chat_prompt_ids(tokenizer, prompt, block_size=None):
    """``prompt`` as a user turn of the model's chat template, ending with the assistant's header
    (``add_generation_prompt``); a prompt longer than the context is refused, not cut (a cut template
    would lose its header)."""
    if not prompt:
        raise ValueError("the prompt must not be empty")
    if not isinstance(tokenizer, BPETokenizer):
        raise ValueError(f"a chat prompt needs a tokenizer with a chat template (a BPETokenizer from a folder whose "
                         f"tokenizer_config.json has 'chat_template', or a GGUF file); got {type(tokenizer).__name__}, "
                         f"and a character model has none")
    ids = np.asarray(tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                                   add_generation_prompt=True), dtype=np.int64)
    if block_size is not None and len(ids) > block_size:
        raise ValueError(f"the chat prompt is {len(ids)} tokens with its template, longer than the model's "
                         f"context of {block_size}")
    return ids


def greedy_answers(model, tokenizer, encoded, stop, max_new_tokens):
    """The decoded greedy continuation of each prompt's ids in ``encoded``, up to the ``stop`` token or
    ``max_new_tokens`` (a list of str, in the prompts' order)."""
    answers, by_length = [None] * len(encoded), {}
    for i, ids in enumerate(encoded):
        by_length.setdefault(len(ids), []).append(i)
    for length, rows in sorted(by_length.items()):
        for at in range(0, len(rows), MAX_BATCH):
            chunk = rows[at:at + MAX_BATCH]
            out = model.generate(np.stack([encoded[i] for i in chunk]), max_new_tokens, temperature=0.0,
                                 stop_token_ids=[stop])
            for i, row in zip(chunk, out[:, length:]):
                new = [int(t) for t in row]
                answers[i] = tokenizer.decode(new[:new.index(stop)] if stop in new else new)
    return answers


def greedy_chat_answers(model, tokenizer, prompts, max_new_tokens):
    """The model's greedy chat answer to each prompt (a list of str, in the prompts' order)."""
    encoded = [chat_prompt_ids(tokenizer, p) for p in prompts]
    return greedy_answers(model, tokenizer, encoded, tokenizer.end_of_turn_id, max_new_tokens)


def exact_match(answers, expected):
    """The fraction of answers equal to the expected ones (surrounding whitespace ignored)."""
    if len(answers) != len(expected) or not expected:
        raise ValueError(f"exact_match needs as many answers as expected ones, at least one; got "
                         f"{len(answers)} and {len(expected)}")
    return sum(a.strip() == e.strip() for a, e in zip(answers, expected)) / len(expected)


def answer_tokens(tokenizer, answers):
    """The most tokens any of ``answers`` takes, plus one for the end-of-turn token: a greedy
    decode that is right stops within this many new tokens."""
    return 1 + max(len(tokenizer.encode(a)) for a in answers)
