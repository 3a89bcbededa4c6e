"""finetune --data chat.jsonl and generate --chat on a folder whose tokenizer is a tokenizer.json with a
ChatML template (a tiny random GPT written by lora_np, a small trained byte-level BPE with ChatML's
special tokens, saved by BPETokenizer.save as transformers would read it).

Oracles: transformers' ``apply_chat_template`` on the same folder gives the prompt ids generate --chat
feeds the model; the closed form "a model whose every logit favours <|im_end|> answers nothing"
checks the stop at the end-of-turn token.
"""

import io
import json
import sys

import numpy as np
import pytest

import lora_np as ln
from helpers import cli

transformers = pytest.importorskip("transformers")

CHATML = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
TEXT = "user assistant system hello world what is two plus two four the capital of france paris 1234 " * 3


def _chatml_tokenizer():
    base = ln.BPETokenizer.train(TEXT, 320)
    n = base.vocab_size
    return ln.BPETokenizer(base.vocab, base.merges, added_tokens=[
        {"id": base.eot_token_id, "content": "<|endoftext|>", "special": True},
        {"id": n, "content": "<|im_start|>", "special": True}, {"id": n + 1, "content": "<|im_end|>", "special": True}],
        special_tokens_map={"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}, chat_template=CHATML)


@pytest.fixture
def chat_dir(tmp_path):
    tok = _chatml_tokenizer()
    ln.manual_seed(0)
    model = ln.GPT(ln.GPTConfig(vocab_size=tok.vocab_size, block_size=48, n_layer=1, n_head=2, n_embd=16))
    folder = tmp_path / "chat-gpt"
    ln.save_gpt2(model, folder)
    tok.save(folder)
    return folder


CONVERSATIONS = [
    [{"role": "user", "content": "what is two plus two"}, {"role": "assistant", "content": "four"}],
    [{"role": "system", "content": "hello"}, {"role": "user", "content": "the capital of france"},
     {"role": "assistant", "content": "paris"}],
] * 6


def _jsonl(path, lines):
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps({"messages": x}) for x in lines) + "\n",
                    encoding="utf-8")
    return path


def test_finetune_on_conversations_then_generate_chat(chat_dir, tmp_path, capsys):
    data = _jsonl(tmp_path / "chat.jsonl", CONVERSATIONS)
    adapter = tmp_path / "adapter"
    code, _, err = cli(capsys, "finetune", "--base", chat_dir, "--data", data, "--out", adapter, "--steps", 3,
                       "--batch-size", 2, "--block-size", 16, "--lora-r", 2, "--quiet")
    assert code == 0, err
    assert (adapter / "tokenizer.json").read_bytes() == (chat_dir / "tokenizer.json").read_bytes()
    code, out, err = cli(capsys, "generate", "--model", chat_dir, "--adapter", adapter, "--chat",
                         "--prompt", "what is two plus two", "--max-new-tokens", 4)
    assert code == 0, err
    assert "<|im_start|>" not in out and "<|im_end|>" not in out


def test_chat_prompt_ids_equal_transformers(chat_dir):
    from lora_np.data import chat_prompt_ids
    fast = transformers.PreTrainedTokenizerFast.from_pretrained(chat_dir)
    tok = ln.load_tokenizer(chat_dir)
    messages = [{"role": "user", "content": "hello world 1234"}]
    expected = fast.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)
    assert chat_prompt_ids(tok, "hello world 1234").tolist() == expected


def test_generate_chat_stops_at_end_of_turn(chat_dir, capsys, monkeypatch):
    """Every logit favours <|im_end|> (ln_f outputs ones; its embedding row is the largest): the reply is
    empty. The prompt comes from standard input."""
    tok = ln.load_tokenizer(chat_dir)
    model = ln.load_gpt2(chat_dir)
    sd = model.state_dict()
    sd["transformer.ln_f.weight"][:] = 0
    sd["transformer.ln_f.bias"][:] = 1
    sd["transformer.wte.weight"][tok.end_of_turn_id] = 5.0
    model.load_state_dict(sd)
    ln.save_gpt2(model, chat_dir)
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello world\n"))
    code, out, err = cli(capsys, "generate", "--model", chat_dir, "--chat", "--max-new-tokens", 5,
                         "--temperature", 0)
    assert code == 0, err
    assert out == "\n"
    code, out, err = cli(capsys, "generate", "--model", chat_dir, "--prompt", "hello", "--max-new-tokens", 3,
                         "--temperature", 0)
    assert code == 0 and out == "hello\n", (out, err)  # plain generate stops at eos (here also <|im_end|>)


def test_bad_chat_line_is_one_line_with_its_number(chat_dir, tmp_path, capsys):
    data = _jsonl(tmp_path / "chat.jsonl", [*CONVERSATIONS[:3], [{"role": "user", "content": "no reply"}]])
    code, out, err = cli(capsys, "finetune", "--base", chat_dir, "--data", data, "--out", tmp_path / "a",
                         "--steps", 1, "--quiet")
    assert code != 0 and not (tmp_path / "a").exists()
    assert "chat.jsonl, line 4: no assistant turn" in err and len(err.strip().splitlines()) == 1, err


def test_generate_chat_needs_a_template(tmp_path, capsys):
    tok = ln.BPETokenizer.train(TEXT, 300)
    model = ln.GPT(ln.GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=1, n_embd=8))
    ln.save_gpt2(model, tmp_path / "m")
    tok.save(tmp_path / "m")
    code, _, err = cli(capsys, "generate", "--model", tmp_path / "m", "--chat", "--prompt", "hello")
    assert code != 0 and "no chat template" in err, err


def test_finetune_chat_data_is_rendered_with_the_template(chat_dir, tmp_path):
    """The dataset the CLI builds holds the template's ids (transformers' apply_chat_template), back to back."""
    from lora_np.data import chat_dataset
    fast = transformers.PreTrainedTokenizerFast.from_pretrained(chat_dir)
    data = _jsonl(tmp_path / "chat.jsonl", CONVERSATIONS)
    ds = chat_dataset(data, 16, ln.load_tokenizer(chat_dir))
    expected = [i for conv in CONVERSATIONS[:-1] for i in fast.apply_chat_template(conv, return_dict=False)]
    tokens = ds.splits["train"][0]
    assert tokens[:len(expected)].tolist() == expected
    assert np.all(tokens[len(expected):] == fast.pad_token_id)


def test_generate_chat_past_the_context_says_so(chat_dir, capsys):
    """--chat with prompt + --max-new-tokens over the context (48): the window would slide past the
    user's turn, so one line on stderr says after how many tokens (the prompt's length counted by
    transformers' own template); within the context nothing is said."""
    fast = transformers.PreTrainedTokenizerFast.from_pretrained(chat_dir)
    n = len(fast.apply_chat_template([{"role": "user", "content": "hello world"}], add_generation_prompt=True,
                                     return_dict=False))
    code, _, err = cli(capsys, "generate", "--model", chat_dir, "--chat", "--prompt", "hello world",
                       "--max-new-tokens", 48)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 0 and len(lines) == 1, err
    assert f"the chat prompt is {n} tokens" in lines[0] and f"--max-new-tokens {48 - n} keeps it" in lines[0]
    code, _, err = cli(capsys, "generate", "--model", chat_dir, "--chat", "--prompt", "hello world",
                       "--max-new-tokens", 48 - n)
    assert code == 0 and err.strip() == "", err


def test_chat_content_of_another_type_is_named_with_its_article(chat_dir, tmp_path, capsys):
    """'content': 3 is "an int", 'content': [...] "a list"."""
    for content, said in ((3, "'content' is an int"), (["a"], "'content' is a list")):
        data = _jsonl(tmp_path / "chat.jsonl", [[{"role": "user", "content": content},
                                                 {"role": "assistant", "content": "x"}]])
        code, _, err = cli(capsys, "finetune", "--base", chat_dir, "--data", data, "--out", tmp_path / "a",
                           "--steps", 1, "--quiet")
        assert code == 2 and said in err and not (tmp_path / "a").exists(), err


@pytest.mark.parametrize("template, error", [
    ("{% for i in range(10 ** 30) %}{{ i }}{% endfor %}", "OverflowError"),
    ("{{ raise_exception('only tools') }}", "only tools"),
])
def test_generate_chat_template_failure_is_one_line(tmp_path, capsys, template, error):
    """Whatever the template raises (Python's errors inside the sandbox too): exit 2, one line that names
    the template's file and the error, no traceback (issue 38 item 6)."""
    tok = _chatml_tokenizer()
    tok.chat_template = template
    model = ln.GPT(ln.GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=1, n_embd=8))
    ln.save_gpt2(model, tmp_path / "m")
    tok.save(tmp_path / "m")
    code, out, err = cli(capsys, "generate", "--model", tmp_path / "m", "--chat", "--prompt", "hello")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert "tokenizer_config.json 'chat_template' refused these messages" in err and error in err
    assert "Traceback" not in err
