"""Chat templates: a model folder's Jinja template turns a list of messages into the model's chat text.

    [{"role": "user", "content": "Hi"}]  ->  "<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n"

The template is rendered as transformers renders it (``transformers/utils/chat_template_utils.py``),
so the text, and then the ids, are the same: a sandboxed Jinja environment with ``trim_blocks`` and
``lstrip_blocks``, the ``loopcontrols`` extension, a ``tojson`` filter that keeps non-ASCII text as it
is, the globals ``raise_exception`` and ``strftime_now``, and the variables ``messages``,
``add_generation_prompt``, ``tools``, ``documents`` and the special tokens' names (``bos_token``,
``eos_token``, ...). A ``{% generation %}`` block renders its body (the loss mask of ``data/chat.py``
comes from rendering prefixes, so the tag's tracking is not needed).

Messages are checked first: each a dict with a known ``role`` and a string ``content``.
"""

import functools
import json
from datetime import datetime

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROLES = ("system", "user", "assistant", "tool")


class _GenerationTag(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}`` (transformers' assistant-mask marker): just its body."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller):
        return caller()


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
        raise ValueError(f"chat template, line {exc.lineno}: {exc.message}") from None


def check_messages(messages):
    """A list of {"role": one of ROLES, "content": str} dicts; the first bad one is named."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError(f"messages must be a non-empty list of {{'role': ..., 'content': ...}} dicts; "
                         f"got {messages!r:.80}")
    for n, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ValueError(f"message {n} must be a dict with 'role' and 'content'; got {message!r:.80}")
        if message.get("role") not in ROLES:
            raise ValueError(f"message {n}: unknown role {message.get('role')!r}; accepted: {', '.join(ROLES)}")
        if not isinstance(message.get("content"), str):
            kind = type(message.get("content")).__name__
            article = "an" if kind[0] in "aeiou" else "a"
            what = "is missing" if message.get("content") is None else f"is {article} {kind}"
            raise ValueError(f"message {n} ({message['role']}): 'content' {what}; it must be a string")


def render_chat(template, messages, add_generation_prompt=False, variables=None):
    """The chat text of ``messages`` (see the module docstring); ``variables``: the special tokens' names
    and anything else the template reads. A template that raises is a ValueError with its message."""
    if not isinstance(template, str):
        raise ValueError("this tokenizer has no chat template (tokenizer_config.json 'chat_template' or "
                         "chat_template.jinja); a base model's folder usually has none")
    check_messages(messages)
    compiled = compile_template(template)
    context = {"tools": None, "documents": None, **(variables or {})}
    try:
        return compiled.render(messages=[dict(m) for m in messages], add_generation_prompt=add_generation_prompt,
                               **context)
    except jinja2.exceptions.TemplateError as exc:
        raise ValueError(f"the chat template refused these messages: {exc}") from None


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
