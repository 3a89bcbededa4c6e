"""Conversations for supervised fine-tuning, with the loss on the assistant's turns only.

    chat.jsonl: one conversation per line
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                  {"role": "assistant", "content": "Hello!"}]}

Each conversation is rendered with the model's own chat template (``chat_template.py``, as
transformers' ``apply_chat_template`` renders it) and encoded once, so its ids are transformers' ids.
Which tokens count in the loss, and which renderings are trained on, follows the template:

1. **The template marks the assistant's text with ``{% generation %}``**: the whole conversation,
   one rendering, and a token counts when its text overlaps a generation block, exactly transformers'
   ``return_assistant_tokens_mask`` (a block that holds the assistant's header counts the header too).
2. **Otherwise, each assistant turn is scored in the rendering where it is the last turn**, as the
   template renders it when the model answers: from the end of the messages before it rendered with
   ``add_generation_prompt=True`` (the prompt ends with the assistant's header, "<|im_start|>assistant\\n")
   to the end of the messages through it: its text, its end-of-turn token (<|im_end|>, <|eot_id|>) and
   whatever the template writes after it. Everything else (system, user, tool turns, headers) is
   given, never predicted.
   - Most templates (ChatML, Qwen2.5, Llama 3, SmolLM2) render a conversation's start the same way
     whatever follows, so every turn's rendering is a prefix of the whole conversation's: the whole
     rendering is trained once with every turn's span scored (the same predictions, as a causal model's
     prediction sees only the tokens before it).
   - A template that rewrites earlier turns once later ones follow (Qwen3 drops earlier turns'
     ``<think>`` blocks) gives one rendering per assistant turn, each ending with the turn it scores.
   A template whose prompt for a turn is not the start of that turn's rendering is refused, naming the
   message.

Renderings are *packed* as ``text_files.py`` packs prompt/completion pairs: back to back in one
stream, each window starting at a rendering's first token (and every block_size tokens inside a
longer one), each window scoring only the targets before the next window's start (so every assistant
token counts in exactly one window, ``dataset.packed_windows``), windows that would score no
assistant token left out, the end of each split padded with
``pad_token_id`` (else ``eos_token_id``) that the loss ignores. The last tenth of the conversations
(at least one) is validation.

Bad input stops before any training, naming the file and line (lines and messages counted from
1): a line that is not JSON or has no ``messages`` list, an unknown role or a missing ``content``
(``chat_template.check_messages``), a template that raises, and a conversation with **no assistant
turn** (it has nothing to learn from: an error, not a silent skip, so a file of the wrong shape is
noticed).
"""

import json
from pathlib import Path

import numpy as np

from ..tokenizer.chat_template import (
    check_messages,
    has_generation_blocks,
    render_chat,
    render_chat_with_spans,
)
from .dataset import packed_dataset
from .text_files import first_json_object, read_text_file


def is_chat_jsonl(path):
    """True when ``path`` is a .jsonl file whose first non-blank line is an object with "messages"."""
    path = Path(path)
    if path.suffix.lower() != ".jsonl" or not path.is_file():
        return False
    obj = first_json_object(path)
    return obj is not None and "messages" in obj


def read_conversations(path):
    """[(messages, line number), ...]; a bad line is reported with the file and its number."""
    conversations = []
    for number, line in enumerate(read_text_file(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}, line {number}: not valid JSON ({exc.msg})") from None
        messages = obj.get("messages") if isinstance(obj, dict) else None
        try:
            if not isinstance(messages, list):
                raise ValueError(f"each line needs a 'messages' list of {{'role', 'content'}} objects; got "
                                 f"{sorted(obj) if isinstance(obj, dict) else type(obj).__name__}")
            check_messages(messages)
            _check_assistant_turns(messages)
        except ValueError as exc:
            raise ValueError(f"{path}, line {number}: {exc}") from None
        conversations.append((messages, number))
    if len(conversations) < 2:
        raise ValueError(f"{path} holds {len(conversations)} conversation(s); it needs at least 2 "
                         f"(training and validation)")
    return conversations


def _check_assistant_turns(messages):
    roles = [m["role"] for m in messages]
    if "assistant" not in roles:
        raise ValueError("no assistant turn: nothing to learn from (the loss counts the assistant's tokens only)")
    if roles[0] == "assistant":
        raise ValueError("the first message is the assistant's; a conversation opens with a system or user message")


def assistant_spans(tokenizer, messages):
    """[(rendered text, [(start, end), ...]), ...]: the renderings of ``messages`` to train on and the
    characters the loss counts in each (see the module docstring)."""
    template, variables = tokenizer.chat_template, tokenizer.special_tokens_map
    if has_generation_blocks(template):
        text, spans = render_chat_with_spans(template, messages, False, variables)
        if not spans:
            raise ValueError("the chat template's {% generation %} blocks mark no text in this conversation, "
                             "so it has nothing to learn from")
        return [(text, spans)]
    turns = [_last_turn(template, variables, messages, k) for k, m in enumerate(messages) if m["role"] == "assistant"]
    text = render_chat(template, messages, False, variables)
    if all(text.startswith(through) for _, through in turns):
        return [(text, [(len(prompt), len(through)) for prompt, through in turns])]
    return [(through, [(len(prompt), len(through))]) for prompt, through in turns]


def _last_turn(template, variables, messages, k):
    """(prompt, through): messages[:k] with the generation prompt, and messages[:k + 1] rendered."""
    prompt = render_chat(template, messages[:k], True, variables)
    through = render_chat(template, messages[:k + 1], False, variables)
    if not through.startswith(prompt):
        raise ValueError(f"message {k + 1}: the chat template's prompt for this assistant turn "
                         f"(add_generation_prompt) is not the start of its rendering with the turn, so the "
                         f"assistant's tokens cannot be found")
    return prompt, through


def conversation_tokens(tokenizer, messages):
    """[(ids, counts), ...]: for each rendering of ``assistant_spans``, its token ids (int64) and which
    of them the loss counts (bool)."""
    samples = []
    for text, spans in assistant_spans(tokenizer, messages):
        ids, token_spans = tokenizer.encode_with_spans(text, allow_special=True)
        first, last = np.array(token_spans, dtype=np.int64).reshape(-1, 2).T  # each token's [first, last) characters
        counts = np.zeros(len(ids), dtype=bool)
        for start, end in spans:
            counts |= (first < end) & (last > start)
        samples.append((np.asarray(ids, dtype=np.int64), counts))
    return samples


def chat_dataset(path, block_size, tokenizer, val_fraction=0.1, context=None, whole=False):
    """A TokenDataset of the conversations in ``path`` (see the module docstring). ``block_size`` None:
    sized to the longest conversation (``dataset.records_window``, at most ``context``); ``whole``:
    every conversation in the validation split (evaluating the whole file)."""
    path = Path(path)
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError(f"{path} holds conversations, but the model's tokenizer has no chat template "
                         f"(tokenizer_config.json 'chat_template' or chat_template.jinja) to render them with")
    encoded = []  # per conversation, its renderings' (ids, counts)
    for messages, number in read_conversations(path):
        try:
            encoded.append(conversation_tokens(tokenizer, messages))
        except ValueError as exc:
            raise ValueError(f"{path}, line {number}: {exc}") from None
    pad = next(i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if i is not None)
    return packed_dataset(encoded, tokenizer, block_size, pad, f"chat file {path.name}", val_fraction, context, whole)
