"""The bad-input catalogue: wrong types, shapes and ranges across the public API and the CLI, and
damaged files. Each case must raise the documented exception type with a message that names the
bad value and what is accepted, and must leave the model and the files as they were."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lora_np
from lora_np import (GPT, GPTConfig, LoraConfig, Tensor, add_lora, gradcheck, load_adapter, load_gpt2, ops,
                     save_adapter, save_gpt2, set_adapter)
from lora_np import BPETokenizer
from lora_np.data import CharTokenizer, task_dataset, text_dataset
from lora_np.optim import SGD, AdamW, clip_grad_norm_
from lora_np.io.safetensors_file import read_safetensors
from lora_np.quant import nf4_dequantize, nf4_quantize, quantize_model
from lora_np import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]


def _model(n_embd=8):
    lora_np.manual_seed(0)
    return GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=n_embd))


def _snapshot(model):
    return {k: v.copy() for k, v in model.state_dict().items()}, sorted(n for n, _ in model.named_modules())


def _files(directory):
    return {p.name: p.read_bytes() for p in Path(directory).iterdir()} if Path(directory).exists() else {}


@pytest.fixture
def env(tmp_path):
    """A model, its checkpoint, an adapter for it and one for a wider base, and damaged copies."""
    e = type("Env", (), {})()
    e.tmp = tmp_path
    e.model = _model()
    e.ckpt = save_gpt2(e.model, tmp_path / "ckpt")
    e.adapter = save_adapter(add_lora(_model(), LoraConfig(r=2)), tmp_path / "adapter")
    e.other_adapter = save_adapter(add_lora(_model(16), LoraConfig(r=2)), tmp_path / "other_adapter")
    return e


def _damaged_copy(env, name, edit):
    """A copy of the checkpoint with one file edited by ``edit(bytes) -> bytes``."""
    d = env.tmp / f"damaged_{len(list(env.tmp.iterdir()))}"
    d.mkdir()
    for f in Path(env.ckpt).iterdir():
        (d / f.name).write_bytes(edit(f.read_bytes()) if f.name == name else f.read_bytes())
    return d


def _json_edit(**changes):
    return lambda raw: json.dumps({**json.loads(raw), **changes}).encode()


# Each case: (id, function of env, exception type, regex the message must match). Messages must name
# the bad value (and what is accepted where a range or set exists).
CASES = [
    ("tensor-of-strings", lambda e: Tensor(["a", "b"]), TypeError, "numeric.*<U1"),
    ("int-tensor-requires-grad", lambda e: Tensor([1, 2], requires_grad=True), TypeError, "floating.*int64"),
    ("broadcast-mismatch", lambda e: Tensor(np.ones((2, 3))) + Tensor(np.ones(4)), ValueError, r"\(2, 3\).*\(4,\)"),
    ("matmul-mismatch", lambda e: Tensor(np.ones((2, 3))) @ Tensor(np.ones((4, 2))), ValueError, r"\(2, 3\).*\(4, 2\)"),
    ("float32-meets-float64", lambda e: Tensor(np.ones(2, np.float32)) * Tensor(np.ones(2)), TypeError,
     "float32.*float64"),
    ("backward-non-scalar", lambda e: (Tensor(np.ones(2), requires_grad=True) * 2.0).backward(), RuntimeError,
     r"shape \(2,\).*pass grad="),
    ("unknown-backend", lambda e: lora_np.set_backend("cuda"), ValueError, "'cuda'.*'numpy', 'cupy'"),
    ("negative-seed", lambda e: lora_np.manual_seed(-1), ValueError, "non-negative integer.*-1"),
    ("gradcheck-float32", lambda e: gradcheck(ops.exp, [Tensor(np.ones(2, np.float32), requires_grad=True)]),
     TypeError, "float32.*float64"),
    ("heads-do-not-divide", lambda e: GPTConfig(n_embd=10, n_head=3), ValueError, "n_embd=10.*n_head=3"),
    ("zero-vocab", lambda e: GPTConfig(vocab_size=0), ValueError, "vocab_size.*positive.*0"),
    ("dropout-out-of-range", lambda e: GPTConfig(dropout=1.5), ValueError, r"dropout.*\[0, 1\).*1.5"),
    ("float-token-ids", lambda e: e.model(np.array([[0.5, 1.0]])), TypeError, "integers.*float64"),
    ("token-id-out-of-vocab", lambda e: e.model(np.array([[1, 10]])), ValueError, r"10 is outside \[0, 10\)"),
    ("sequence-too-long", lambda e: e.model(np.zeros((1, 9), np.int64)), ValueError, "9.*block_size=8"),
    ("top-k-zero", lambda e: e.model.generate(np.zeros((1, 1), np.int64), 2, top_k=0), ValueError,
     r"top_k.*\[1, 10\].*0"),
    ("negative-temperature", lambda e: e.model.generate(np.zeros((1, 1), np.int64), 2, temperature=-1.0),
     ValueError, "temperature.*-1"),
    ("target-out-of-range", lambda e: ops.cross_entropy(Tensor(np.ones((2, 3))), np.array([0, 3])), ValueError,
     r"3 is outside \[0, 3\)"),
    ("state-dict-wrong-shape", lambda e: e.model.load_state_dict(
        {**e.model.state_dict(), "transformer.wte.weight": np.zeros((11, 8))}), ValueError,
     r"transformer.wte.weight.*\(11, 8\).*\(10, 8\)"),
    ("checkpoint-dir-missing", lambda e: load_gpt2(e.tmp / "nowhere"), FileNotFoundError, "nowhere"),
    ("checkpoint-empty-weights", lambda e: load_gpt2(_damaged_copy(e, "model.safetensors", lambda b: b"")),
     ValueError, "model.safetensors: not a valid safetensors file .*truncated.*header too small"),
    ("checkpoint-truncated", lambda e: load_gpt2(_damaged_copy(e, "model.safetensors", lambda b: b[:-7])),
     ValueError, "model.safetensors: not a valid safetensors file .*truncated.*not fully covered"),
    ("checkpoint-config-not-json", lambda e: load_gpt2(_damaged_copy(e, "config.json", lambda b: b[:-3])),
     ValueError, "not valid JSON"),
    ("checkpoint-config-disagrees", lambda e: load_gpt2(_damaged_copy(e, "config.json", _json_edit(n_embd=16))),
     ValueError, r"implies transformer.wte.weight of shape \(10, 16\); the weights hold \(10, 8\)"),
    ("checkpoint-config-wrong-type", lambda e: load_gpt2(_damaged_copy(e, "config.json", _json_edit(n_layer="2"))),
     ValueError, "n_layer.*'2'"),
    ("checkpoint-dtype", lambda e: load_gpt2(e.ckpt, dtype="int8"), ValueError, "float32 or float64.*int8"),
    ("lora-r-zero", lambda e: LoraConfig(r=0), ValueError, "r must be a positive integer; got 0"),
    ("lora-alpha-negative", lambda e: LoraConfig(lora_alpha=-1), ValueError, "lora_alpha.*positive.*-1"),
    ("lora-dropout-one", lambda e: LoraConfig(lora_dropout=1.0), ValueError, r"lora_dropout.*\[0, 1\).*1.0"),
    ("lora-bad-regex", lambda e: LoraConfig(target_modules="(c_attn"), ValueError, "regular expression"),
    ("lora-unknown-target", lambda e: add_lora(e.model, LoraConfig(target_modules=["q_proj"])), ValueError,
     r"'q_proj'.*\['c_attn', 'c_fc', 'c_proj'\]"),
    ("lora-rank-too-large", lambda e: add_lora(e.model, LoraConfig(r=9)), ValueError, r"r=9 exceeds .* = 8"),
    ("adapter-name-twice", lambda e: add_lora(e.model, LoraConfig(r=2)), ValueError, "'default' already exists"),
    ("set-unknown-adapter", lambda e: set_adapter(e.model, "task_b"), ValueError, r"'task_b'.*\['default'\]"),
    ("adapter-for-another-base", lambda e: load_adapter(e.model, e.other_adapter), ValueError,
     r"lora_A.weight has shape \(2, 16\), the model needs \(2, 8\)"),
    ("adapter-dir-missing", lambda e: load_adapter(e.model, e.tmp / "no_adapter"), FileNotFoundError, "no_adapter"),
    ("adapter-config-damaged", lambda e: load_adapter(e.model, _damaged_adapter(e, "adapter_config.json", b"{")),
     ValueError, "not valid JSON"),
    ("adapter-dora", lambda e: load_adapter(e.model, _damaged_adapter(
        e, "adapter_config.json", json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 4,
                                              "target_modules": ["c_attn"], "use_dora": True}).encode())),
     ValueError, "use_dora=True is not supported|missing key .*lora_magnitude_vector"),  # DoRA without its magnitudes
    ("adamw-zero-lr", lambda e: AdamW(e.model.parameters(), lr=0), ValueError, "lr must be a positive number; got 0"),
    ("adamw-beta-one", lambda e: AdamW(e.model.parameters(), betas=(1.0, 0.9)), ValueError, r"betas.*\[0, 1\)"),
    ("sgd-no-parameters", lambda e: SGD([], lr=0.1), ValueError, "empty parameter list"),
    ("clip-zero", lambda e: clip_grad_norm_(e.model.parameters(), 0), ValueError, "max_norm.*positive.*0"),
    ("dropout-p-one", lambda e: ops.dropout(Tensor(np.ones(2)), 1.0), ValueError, r"\[0, 1\); got 1.0"),
    ("train-zero-steps", lambda e: TrainConfig(steps=0), ValueError, "steps must be a positive integer; got 0"),
    ("train-nothing-trainable", lambda e: train(e.model.requires_grad_(False), task_dataset("copy", 8, 50, 20),
                                                TrainConfig(steps=1), quiet=True), ValueError, "requires_grad"),
    ("data-file-empty", lambda e: text_dataset(_write(e, "empty.txt", b""), 8), ValueError, "empty"),
    ("data-file-too-short", lambda e: text_dataset(_write(e, "short.txt", b"abc"), 8), ValueError,
     "has 3 characters.*needs at least"),
    ("unknown-character", lambda e: CharTokenizer("ab").encode("abz"), ValueError, "'z'.*'ab'"),
    ("unknown-task", lambda e: task_dataset("sort", 8), ValueError, "'sort'.*copy, reverse, shift"),
    ("quantize-unknown-scheme", lambda e: load_gpt2(e.ckpt, quantize="nf5"), ValueError,
     "unknown quantization 'nf5'; accepted: 'nf4'.*'int8'"),
    ("quantize-block-does-not-divide", lambda e: nf4_quantize(np.ones((3, 5), np.float32), block_size=64),
     ValueError, r"block_size=64 does not divide the 15 values"),
    ("quantized-packed-data-corrupt", lambda e: nf4_dequantize(np.zeros(3, np.uint8), np.ones(1, np.float32), (8, 8)),
     ValueError, "corrupt quantized data.*3 entries.*need 32"),
    ("save-gpt2-quantized", lambda e: save_gpt2(e.model, e.tmp / "quantized_out"), ValueError,
     r"quantized.*dequantize_model\(model\) first"),
    ("safetensors-bad-offsets", lambda e: read_safetensors(_write(
        e, "bad.safetensors", _raw_safetensors({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, 8))),
     ValueError, r"bad.safetensors: not a valid safetensors file \(damaged or truncated\).*not fully covered"),
]


def _write(env, name, data):
    path = env.tmp / name
    path.write_bytes(data)
    return path


def _damaged_adapter(env, name, data):
    d = env.tmp / f"adapter_damaged_{len(list(env.tmp.iterdir()))}"
    d.mkdir()
    for f in Path(env.adapter).iterdir():
        (d / f.name).write_bytes(data if f.name == name else f.read_bytes())
    return d


def _raw_safetensors(header, n_data):
    blob = json.dumps(header).encode()
    return len(blob).to_bytes(8, "little") + blob + b"\0" * n_data


# Cases that need an adapted model first: prepared before the "unchanged" snapshot is taken.
PREPARE = {"adapter-name-twice": lambda e: add_lora(e.model, LoraConfig(r=2)),
           "save-gpt2-quantized": lambda e: quantize_model(e.model, "nf4", block_size=8),
           "set-unknown-adapter": lambda e: add_lora(e.model, LoraConfig(r=2))}


def test_the_catalogue_has_at_least_thirty_cases():
    assert len(CASES) + len(CLI_CASES) >= 30


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, env):
    name, fn, exc_type, pattern = case
    if name in PREPARE:
        PREPARE[name](env)
    model_before = _snapshot(env.model)
    files_before = {d: _files(d) for d in (env.ckpt, env.adapter, env.other_adapter)}
    with pytest.raises(exc_type, match=pattern):
        fn(env)
    state, modules = _snapshot(env.model)
    assert modules == model_before[1], "the model's structure changed"
    for name, value in model_before[0].items():
        np.testing.assert_array_equal(state[name], value)
    for d, before in files_before.items():
        assert _files(d) == before, f"{d} changed"


# Command-line cases: (id, argv, text the one stderr line must hold[, environment]). Each must exit 2
# with exactly one line on stderr, write nothing to --out and leave the checkpoint as it was.
# {ckpt}: a char model (vocabulary "abcdefgh>\n", block_size 8); {out}: a path that must stay absent;
# {file}: an existing file; {accents}: text with characters outside the vocabulary.
CLI_CASES = [
    ("cli-lora-r-zero", ["finetune", "--base", "{ckpt}", "--task", "shift", "--out", "{out}", "--lora-r", "0"],
     "--lora-r must be a positive integer; got 0"),
    ("cli-missing-data", ["pretrain", "--data", "{tmp}/missing.txt", "--out", "{out}"], "data file not found"),
    ("cli-corrupt-base", ["finetune", "--base", "{damaged}", "--task", "shift", "--out", "{out}"], "truncated"),
    ("cli-unknown-target", ["finetune", "--base", "{ckpt}", "--task", "shift", "--out", "{out}", "--targets", "q_proj"],
     "q_proj"),
    # issue 35 item 4: a typo beside a good name was dropped silently
    ("cli-mistyped-target-beside-a-good-one", ["finetune", "--base", "{ckpt}", "--task", "shift", "--out", "{out}",
                                               "--targets", "c_attn,cproj"], "['cproj'] match no layer"),
    ("cli-negative-steps", ["pretrain", "--task", "copy", "--out", "{out}", "--steps", "-5"],
     "--steps must be a positive integer; got -5"),
    ("cli-bad-backend", ["pretrain", "--task", "copy", "--out", "{out}", "--backend", "tpu"], "'numpy', 'cupy'"),
    # issue 16, item 1: a bad LORA_NP_BACKEND is one line, not an import traceback
    ("cli-env-backend-unknown", ["generate", "--model", "{ckpt}", "--prompt", "ab"], "'numpy', 'cupy'",
     {"LORA_NP_BACKEND": "cuda"}),
    ("cli-env-backend-cupy-unusable", ["generate", "--model", "{ckpt}", "--prompt", "ab"], "cupy",
     {"LORA_NP_BACKEND": "cupy"}),
    # item 2: every numeric flag is checked, 0 never means "the default"
    ("cli-steps-zero", ["pretrain", "--task", "copy", "--out", "{out}", "--steps", "0"],
     "--steps must be a positive integer; got 0"),
    ("cli-batch-size-zero", ["pretrain", "--task", "copy", "--out", "{out}", "--batch-size", "0"], "--batch-size must be"),
    ("cli-lr-zero", ["pretrain", "--task", "copy", "--out", "{out}", "--lr", "0"], "--lr must be a positive number"),
    ("cli-lr-nan", ["pretrain", "--task", "copy", "--out", "{out}", "--lr", "nan"], "--lr must be a positive number"),
    ("cli-warmup-negative", ["pretrain", "--task", "copy", "--out", "{out}", "--warmup-steps", "-1"],
     "--warmup-steps must be a non-negative integer"),
    ("cli-grad-clip-zero", ["pretrain", "--task", "copy", "--out", "{out}", "--grad-clip", "0"], "--grad-clip must be"),
    ("cli-eval-every-zero", ["pretrain", "--task", "copy", "--out", "{out}", "--eval-every", "0"], "--eval-every must be"),
    ("cli-seed-negative", ["pretrain", "--task", "copy", "--out", "{out}", "--seed", "-1"], "--seed must be a non-negative"),
    ("cli-n-layer-zero", ["pretrain", "--task", "copy", "--out", "{out}", "--n-layer", "0"], "--n-layer must be"),
    ("cli-block-size-zero", ["pretrain", "--task", "copy", "--out", "{out}", "--block-size", "0"], "--block-size must be"),
    ("cli-dropout-one", ["pretrain", "--task", "copy", "--out", "{out}", "--dropout", "1"], "--dropout must be a number in [0, 1)"),
    ("cli-lora-alpha-zero", ["finetune", "--base", "{ckpt}", "--task", "shift", "--out", "{out}", "--lora-alpha", "0"],
     "--lora-alpha must be a positive number"),
    ("cli-max-new-tokens-zero", ["generate", "--model", "{ckpt}", "--prompt", "ab", "--max-new-tokens", "0"],
     "--max-new-tokens must be"),
    ("cli-top-k-zero", ["generate", "--model", "{ckpt}", "--prompt", "ab", "--top-k", "0"], "--top-k must be"),
    ("cli-temperature-negative", ["generate", "--model", "{ckpt}", "--prompt", "ab", "--temperature", "-1"],
     "--temperature must be"),
    ("cli-eval-batches-zero", ["eval", "--model", "{ckpt}", "--task", "copy", "--eval-batches", "0"], "--eval-batches must be"),
    ("cli-window-beyond-context", ["finetune", "--base", "{ckpt}", "--task", "shift", "--out", "{out}", "--block-size", "9"],
     "exceeds the model's context of 8"),
    # item 3: sizes that cannot fit are refused with the estimate, before anything is allocated or written
    ("cli-huge-width", ["pretrain", "--task", "copy", "--out", "{out}", "--n-embd", "100000"], "this run needs about"),
    ("cli-huge-block", ["pretrain", "--task", "copy", "--out", "{out}", "--block-size", "6000", "--batch-size", "4096"],
     "this run needs about"),  # about 20 TB of attention: refused on any machine
    # items 4-6: --out is a file, an earlier run, or a run to resume that is not there
    ("cli-out-is-a-file", ["pretrain", "--task", "copy", "--out", "{file}"], "is a file"),
    ("cli-out-holds-a-run", ["pretrain", "--task", "copy", "--out", "{ckpt}"], "already holds files; add --resume"),
    ("cli-resume-and-overwrite", ["pretrain", "--out", "{ckpt}", "--resume", "--overwrite"], "give one of them"),
    ("cli-resume-without-run", ["finetune", "--out", "{out}", "--resume"], "no run to continue"),
    ("cli-finetune-without-base", ["finetune", "--task", "shift", "--out", "{out}"], "finetune needs --base"),
    # item 9: characters the base's vocabulary lacks, and the policy option
    ("cli-unknown-characters", ["finetune", "--base", "{ckpt}", "--data", "{accents}", "--out", "{out}"],
     "characters 'éü' are not in the vocabulary"),
    ("cli-unknown-chars-policy", ["finetune", "--base", "{ckpt}", "--data", "{accents}", "--out", "{out}",
                                  "--unknown-chars", "skip"], "--unknown-chars must be error, drop or map:X"),
    ("cli-unknown-chars-map-target", ["finetune", "--base", "{ckpt}", "--data", "{accents}", "--out", "{out}",
                                      "--unknown-chars", "map:z"], "'z' is not in the vocabulary"),
    # item 10: no silent defaults
    ("cli-finetune-without-data", ["finetune", "--base", "{ckpt}", "--out", "{out}"], "finetune needs data: --data FILE"),
    ("cli-eval-without-data", ["eval", "--model", "{ckpt}"], "eval needs data"),
    ("cli-task-and-data", ["eval", "--model", "{ckpt}", "--task", "copy", "--data", "{accents}"], "not both"),
    ("cli-disable-adapter-alone", ["eval", "--model", "{ckpt}", "--task", "copy", "--disable-adapter"],
     "--disable-adapter needs --adapter"),
    ("cli-bpe-without-vocab-size", ["pretrain", "--data", "{accents}", "--tokenizer", "bpe", "--out", "{out}"],
     "--tokenizer bpe needs --data FILE"),
    ("cli-vocab-size-with-char", ["pretrain", "--data", "{accents}", "--vocab-size", "300", "--out", "{out}"],
     "--vocab-size goes with --tokenizer bpe"),
    # issue 15: model folders with a BPE tokenizer, JSONL data. {bpe}: a BPE model folder
    # (vocab.json + merges.txt); {bpe_*}: damaged copies of it.
    ("cli-tokenizer-missing", ["generate", "--model", "{bpe_no_tokenizer}", "--prompt", "the"], "no tokenizer in"),
    ("cli-tokenizer-merges-missing", ["generate", "--model", "{bpe_no_merges}", "--prompt", "the"],
     "merges.txt"),
    ("cli-tokenizer-malformed", ["generate", "--model", "{bpe_bad_vocab}", "--prompt", "the"], "not valid JSON"),
    ("cli-tokenizer-vocab-disagrees", ["generate", "--model", "{bpe_small_model}", "--prompt", "the"],
     "config.json says vocab_size=10"),
    ("cli-jsonl-missing-completion", ["finetune", "--base", "{bpe}", "--data", "{jsonl_no_completion}", "--out", "{out}"],
     "line 2: each line needs string fields 'prompt' and 'completion'"),
    ("cli-jsonl-not-json", ["finetune", "--base", "{bpe}", "--data", "{jsonl_broken}", "--out", "{out}"],
     "line 3: not valid JSON"),
    ("cli-text-tokenizes-to-nothing", ["finetune", "--base", "{ckpt}", "--data", "{only_unknown}", "--out", "{out}",
                                       "--unknown-chars", "drop"], "tokenizes to nothing"),
    ("cli-task-on-a-bpe-model", ["finetune", "--base", "{bpe}", "--task", "shift", "--out", "{out}"],
     "character-level toy task"),
    # LoRA variants: options that cannot apply are refused, never ignored
    ("cli-lora-option-with-full", ["finetune", "--base", "{ckpt}", "--task", "shift", "--out", "{out}", "--full",
                                   "--dora"], "--dora configure LoRA; --full trains every weight"),
    ("cli-pissa-with-dora", ["finetune", "--base", "{ckpt}", "--task", "shift", "--out", "{out}", "--init", "pissa",
                             "--dora"], "choose one of them"),
    ("cli-pissa-rank-too-large", ["finetune", "--base", "{ckpt}", "--task", "shift", "--out", "{out}", "--init",
                                  "pissa", "--lora-r", "6"], "must not exceed the model width 8"),
    ("cli-unknown-init", ["finetune", "--base", "{ckpt}", "--task", "shift", "--out", "{out}", "--init", "loftq"],
     "invalid choice"),
    ("cli-loraplus-ratio-zero", ["finetune", "--base", "{ckpt}", "--task", "shift", "--out", "{out}",
                                 "--loraplus-ratio", "0"], "--loraplus-ratio must be a positive number"),
    ("cli-quantize-block-does-not-divide", ["finetune", "--base", "{ckpt}", "--task", "shift", "--out", "{out}",
                                            "--quantize", "nf4"], "does not divide"),
    ("cli-bpe-vocab-too-small", ["pretrain", "--data", "{accents}", "--tokenizer", "bpe", "--vocab-size", "100",
                                 "--out", "{out}"], "--vocab-size must be an integer ≥ 257"),
    # issue 28: messages that name the file and line, and answer in flag terms
    ("cli-unknown-characters-line", ["finetune", "--base", "{ckpt}", "--data", "{accents}", "--out", "{out}"],
     "accents.txt, line 2: characters 'éü' are not in the vocabulary"),
    ("cli-data-not-utf8", ["finetune", "--base", "{ckpt}", "--data", "{latin1}", "--out", "{out}"],
     "latin1.jsonl, line 2, column 16: byte 0xe9 is not UTF-8"),
    ("cli-generate-unknown-chars", ["generate", "--model", "{ckpt}", "--prompt", "café"],
     "--unknown-chars drop removes them"),
    ("cli-config-heads-do-not-divide", ["generate", "--model", "{bad_heads}", "--prompt", "ab"],
     "config.json: GPTConfig: n_embd=8 must be divisible by n_head=3"),
    ("cli-quantize-with-dora", ["finetune", "--base", "{ckpt}", "--task", "shift", "--out", "{out}", "--quantize",
                                "nf4", "--dora"], "--dora needs the base's float weights, and --quantize nf4"),
    ("cli-merge-out-holds-files", ["merge", "--base", "{ckpt}", "--adapter", "{ckpt}", "--out", "{ckpt}"],
     "already holds files; add --overwrite to replace it"),
    ("cli-demo-out-holds-files", ["demo", "--quick", "--out", "{ckpt}"], "already holds files; add --overwrite"),
]


def _bpe_model_dirs(env):
    """A small BPE model folder (weights + vocab.json + merges.txt) and damaged variants of it."""
    tokenizer = BPETokenizer.train("the cat sat on the mat. the dog sat on the log. " * 20, 300)
    lora_np.manual_seed(0)
    good = save_gpt2(GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=8, n_layer=1, n_head=2, n_embd=8)),
                     env.tmp / "bpe")
    tokenizer.save(good)
    dirs = {"bpe": good}
    for name, drop, edit in (("no_tokenizer", ("vocab.json", "merges.txt"), None), ("no_merges", ("merges.txt",), None),
                             ("bad_vocab", (), ("vocab.json", b'{"a": ')), ("small_model", (), None)):
        d = env.tmp / f"bpe_{name}"
        d.mkdir()
        source = env.ckpt if name == "small_model" else good
        for f in source.iterdir():
            if f.name not in drop and f.name != "char_vocab.json":
                (d / f.name).write_bytes(edit[1] if edit and f.name == edit[0] else f.read_bytes())
        if name == "small_model":
            tokenizer.save(d)
        dirs[f"bpe_{name}"] = d
    return dirs


def _cli_env(env):
    """The files the command-line cases name, made once per case."""
    CharTokenizer("abcdefgh>\n").save(env.ckpt)
    files = {"a_file": "not a directory\n", "accents.txt": "abc>abc\ncafé>dbgf\nüb>ac\n" * 40,
             "only_unknown.txt": "xyz éü " * 40,
             "jsonl_no_completion.jsonl": '{"prompt": "the", "completion": " cat"}\n{"prompt": "the"}\n',
             "jsonl_broken.jsonl": '{"prompt": "a", "completion": "b"}\n\n{"prompt": "a", "completion": \n'}
    for name, text in files.items():
        (env.tmp / name).write_text(text)
    paths = {name.split(".")[0]: env.tmp / name for name in files}
    paths["latin1"] = env.tmp / "latin1.jsonl"
    paths["latin1"].write_bytes('{"prompt": "a", "completion": "b"}\n{"prompt": "caf\xe9", "completion": "b"}\n'
                                .encode("latin-1"))
    return {**paths, **_bpe_model_dirs(env), "ckpt": env.ckpt, "out": env.tmp / "out", "tmp": env.tmp,
            "file": paths["a_file"], "damaged": _damaged_copy(env, "model.safetensors", lambda b: b[:50]),
            "bad_heads": _damaged_copy(env, "config.json", _json_edit(n_head=3))}


def _run_cli(args, environment, capsys):
    """(exit code, stderr): in this process, or in a fresh one when the case sets environment
    variables (LORA_NP_BACKEND is read at import)."""
    if environment:
        proc = subprocess.run([sys.executable, "-m", "lora_np", *args], cwd=ROOT, capture_output=True, text=True,
                              env=dict(os.environ, PYTHONPATH=str(ROOT), **environment), timeout=120)
        return proc.returncode, proc.stderr
    from lora_np.app.cli import main
    try:
        code = main(args)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_bad_cli_input(case, env, capsys):
    name, args, message, environment = (*case, None)[:4]
    if name == "cli-env-backend-cupy-unusable" and lora_np.backend.cupy_available():
        pytest.skip("CuPy and a GPU are present: LORA_NP_BACKEND=cupy is usable here")
    paths = _cli_env(env)
    files_before = _files(env.ckpt)
    file_before = paths["file"].read_bytes()
    code, err = _run_cli([a.format(**paths) for a in args], environment, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err
    assert not paths["out"].exists(), "--out was written"
    assert _files(env.ckpt) == files_before and paths["file"].read_bytes() == file_before
