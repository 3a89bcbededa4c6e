"""Chat templates: a model folder's Jinja template turns a list of messages into the model's chat text.

    [{"role": "user", "content": "Hi"}]  ->  "<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n"

The template is rendered as transformers renders it (``transformers/utils/chat_template_utils.py``),
so the text, and then the ids, are the same: a sandboxed Jinja environment with ``trim_blocks`` and
``lstrip_blocks``, the ``loopcontrols`` extension, a ``tojson`` filter that keeps non-ASCII text as it
is, the globals ``raise_exception`` and ``strftime_now``, and the variables ``messages``,
``add_generation_prompt``, ``tools``, ``documents`` and the special tokens' names (``bos_token``,
``eos_token``, ...). The messages are copied as transformers copies them: keys whose value is None
are dropped (so ``"content": null`` is a missing content), and a reasoning text under any of
``reasoning_content``, ``thinking``, ``reasoning`` is given to the template under the first two too.

``{% generation %}...{% endgeneration %}`` renders its body; ``render_chat_with_spans`` also returns
the (start, end) characters of each such block, the spans transformers' ``return_assistant_tokens_mask``
marks (``data/chat.py`` turns them into the loss mask).

Messages are checked first (numbered from 1): each a dict with a known ``role`` and a string
``content``; an assistant message that calls tools may leave ``content`` out (``tool_calls``, a
non-empty list, as the OpenAI format and transformers have it). Whatever the template raises (its
``raise_exception``, an undefined name, or Python's own errors such as an OverflowError from a huge
``range``) is one ValueError naming the template's source and the error.
"""

import contextvars
import functools
import json
import re
from datetime import datetime

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROLES = ("system", "user", "assistant", "tool")
REASONING_KEYS = ("reasoning_content", "thinking", "reasoning")
GENERATION_TAG = re.compile(r"\{\%-?\s*generation\s*-?\%\}")

_generation_spans = contextvars.ContextVar("generation_spans", default=None)  # (text so far, spans) while tracked


class ChatTemplate(str):
    """A template's text that remembers where it was read (``source``: a file, a file's key), for errors."""

    def __new__(cls, text, source="the chat template"):
        template = super().__new__(cls, text)
        template.source = source
        return template


class _GenerationTag(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}`` (transformers' assistant-mask marker): its body, and,
    while ``render_chat_with_spans`` tracks them, the body's (start, end) in the text rendered so far."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller):
        text = caller()
        tracked = _generation_spans.get()
        if tracked is not None:
            blocks, spans = tracked
            start = sum(map(len, blocks))
            spans.append((start, start + len(text)))
        return text


def _raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format):
    return datetime.now().strftime(format)


@functools.lru_cache(maxsize=16)
def compile_template(template):
    """The compiled template; a syntax error is a ValueError naming its line."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[_GenerationTag, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(template)
    except jinja2.exceptions.TemplateSyntaxError as exc:
        raise ValueError(f"{_source(template)}, line {exc.lineno}: {exc.message}") from None


def _source(template):
    return getattr(template, "source", "the chat template")


def check_messages(messages):
    """A list of {"role": one of ROLES, "content": str} dicts (see the module docstring); the first bad
    one is named, counting from 1."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError(f"messages must be a non-empty list of {{'role': ..., 'content': ...}} dicts; "
                         f"got {messages!r:.80}")
    for n, message in enumerate(messages, start=1):
        if not isinstance(message, dict):
            raise ValueError(f"message {n} must be a dict with 'role' and 'content'; got {message!r:.80}")
        if message.get("role") not in ROLES:
            raise ValueError(f"message {n}: unknown role {message.get('role')!r}; accepted: {', '.join(ROLES)}")
        calls = message.get("tool_calls")
        if calls is not None and not (isinstance(calls, list) and calls and message["role"] == "assistant"):
            raise ValueError(f"message {n} ({message['role']}): 'tool_calls' must be a non-empty list in an "
                             f"assistant message; got {calls!r:.60}")
        content = message.get("content")
        if not isinstance(content, str) and not (content is None and calls):
            kind = type(content).__name__
            article = "an" if kind[0] in "aeiou" else "a"
            what = "is missing" if content is None else f"is {article} {kind}"
            raise ValueError(f"message {n} ({message['role']}): 'content' {what}; it must be a string "
                             f"(an assistant message with 'tool_calls' may leave it out)")


def template_messages(messages):
    """The messages as transformers hands them to the template: None values dropped, reasoning aliased."""
    copied = []
    for message in messages:
        message = {key: value for key, value in message.items() if value is not None}
        reasoning = next((message[key] for key in REASONING_KEYS if key in message), None)
        if reasoning is not None:
            message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        copied.append(message)
    return copied


def render_chat_with_spans(template, messages, add_generation_prompt=False, variables=None):
    """(chat text, [(start, end), ...] of each ``{% generation %}`` block) for ``messages`` (see the
    module docstring); ``variables``: the special tokens' names and anything else the template reads."""
    if not isinstance(template, str):
        raise ValueError("this tokenizer has no chat template (tokenizer_config.json 'chat_template' or "
                         "chat_template.jinja); a base model's folder usually has none")
    check_messages(messages)
    compiled = compile_template(template)
    context = {"tools": None, "documents": None, **(variables or {})}
    blocks, spans = [], []
    token = _generation_spans.set((blocks, spans))
    try:
        for block in compiled.generate(messages=template_messages(messages),
                                       add_generation_prompt=add_generation_prompt, **context):
            blocks.append(block)
    except Exception as exc:  # the template is code from the model's folder: whatever it raises is its error
        what = str(exc) if isinstance(exc, jinja2.exceptions.TemplateError) else f"{type(exc).__name__}: {exc}"
        raise ValueError(f"{_source(template)} refused these messages: {what}") from None
    finally:
        _generation_spans.reset(token)
    return "".join(blocks), spans


def render_chat(template, messages, add_generation_prompt=False, variables=None):
    """The chat text of ``messages`` (``render_chat_with_spans`` without the spans)."""
    return render_chat_with_spans(template, messages, add_generation_prompt, variables)[0]


def has_generation_blocks(template):
    """True when the template marks the assistant's text with ``{% generation %}`` (transformers' test)."""
    return isinstance(template, str) and GENERATION_TAG.search(template) is not None


def end_of_turn_id(tokenizer):
    """The token that closes an assistant turn (ChatML's <|im_end|>, Llama 3's <|eot_id|>): the first
    special token the template writes after an assistant's text. Without a template: ``eos_token_id``."""
    if tokenizer.chat_template is None:
        return tokenizer.eos_token_id
    user = [{"role": "user", "content": "ping"}]
    variables = tokenizer.special_tokens_map
    prompt = render_chat(tokenizer.chat_template, user, True, variables)
    turn = render_chat(tokenizer.chat_template, [*user, {"role": "assistant", "content": "pong"}], False, variables)
    after = turn[len(prompt):].split("pong", 1)[-1] if turn.startswith(prompt) else ""
    closing = [i for i in tokenizer.encode(after, allow_special=True) if i in tokenizer.special_ids]
    return closing[0] if closing else tokenizer.eos_token_id
