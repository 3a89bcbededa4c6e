"""What merge and finetune write for a hub-like bfloat16 Llama-family base (issue 35 items 3, 5-7):
the adapter/base check by tensors not files, the adapter PEFT's AutoPeft finds its base from, and a
merged folder of the base's kind (its dtype, its config's form, its generation_config.json).

Oracles: transformers reads the merged folder (and, where an install of transformers 4.x is named
by LORA_NP_TRANSFORMERS4, that older version too: tests/transformers4_logits.py), PEFT reads the adapter.
"""

import shutil

import pytest

from helpers import cli
from llama_oracle import tiny_hf_llama
from lora_np.app.cli import main
from lora_np.app.model_dir import base_fingerprint
from lora_np.io.safetensors_file import open_safetensors

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizer_folders = pytest.importorskip("tokenizer_folders")

PROSE = "RMSNorm drops the mean; RoPE rotates pairs of features by position.\n" * 20


def _qwen_folder(path, seed=0, **kw):
    tokenizer_folders.write_folder(path, "qwen")
    tiny_hf_llama(path, "qwen3", vocab_size=151936, max_position_embeddings=64, bos_token_id=151643,
                  eos_token_id=151645, seed=seed, **kw)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A bfloat16 Qwen3 base and a LoRA adapter trained on it for 2 steps."""
    root = tmp_path_factory.mktemp("merged")
    base = _qwen_folder(root / "base", dtype=torch.bfloat16)
    text = root / "prose.txt"
    text.write_text(PROSE)
    adapter = root / "adapter"
    assert main(["finetune", "--base", str(base), "--data", str(text), "--out", str(adapter), "--steps", "2",
                 "--batch-size", "2", "--block-size", "16", "--lora-r", "2", "--lr", "3e-2", "--quiet",
                 "--targets", "q_proj,v_proj,down_proj"]) == 0
    return base, adapter


def test_the_same_weights_saved_as_shards_or_float32_are_the_same_base(trained, tmp_path, capsys):
    """Item 5: the base re-saved as shards (and in float32) is the base the adapter was trained on;
    another base is refused in one line, and --force applies it, saying what it skipped."""
    base, adapter = trained
    sharded = tmp_path / "sharded"  # transformers' own re-save: float32 (bf16 widened exactly), in shards
    transformers.AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).save_pretrained(
        sharded, max_shard_size="2MB")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(base / name, sharded / name)
    assert (sharded / "model.safetensors.index.json").is_file()
    assert base_fingerprint(sharded) == base_fingerprint(base)
    code, _, err = cli(capsys, "generate", "--model", sharded, "--adapter", adapter, "--prompt", "RoPE",
                         "--max-new-tokens", 2)
    assert code == 0, err
    other = _qwen_folder(tmp_path / "other", seed=1, dtype=torch.bfloat16)
    assert base_fingerprint(other) != base_fingerprint(base)
    capsys.readouterr()  # transformers' progress bars
    code, _, err = cli(capsys, "generate", "--model", other, "--adapter", adapter, "--prompt", "RoPE",
                       "--max-new-tokens", 2)
    assert code == 2 and err.count("\n") == 1 and "trained on another base model" in err and str(base) in err
    assert "--force" in err, err
    code, _, err = cli(capsys, "generate", "--model", other, "--adapter", adapter, "--prompt", "RoPE",
                       "--max-new-tokens", 2, "--force")
    assert code == 0 and "--force: applying" in err and "trained on another base model" in err, err


def test_a_missing_adapter_folder_is_named_as_a_folder(trained, tmp_path, capsys):
    """Item 8: not "safetensors file not found: .../adapter_model.safetensors"."""
    base, _ = trained
    code, _, err = cli(capsys, "generate", "--model", base, "--adapter", tmp_path / "nope", "--prompt", "RoPE")
    assert code == 2 and "adapter directory not found" in err and "safetensors" not in err, err


def test_a_changed_sample_value_changes_the_fingerprint(trained, tmp_path):
    """The fingerprint reads values: one sampled value changed (the tensor's last) gives another."""
    base, _ = trained
    copy = tmp_path / "copy"
    shutil.copytree(base, copy)
    tensors, _ = open_safetensors(copy / "model.safetensors")
    last = tensors["model.norm.weight"]
    with open(copy / "model.safetensors", "r+b") as f:  # the tensor's last bfloat16 value, +1 in its bits
        f.seek(last.start + last.nbytes - 2)
        bits = int.from_bytes(f.read(2), "little")
        f.seek(last.start + last.nbytes - 2)
        f.write(((bits + 1) & 0xFFFF).to_bytes(2, "little"))
    assert base_fingerprint(copy) != base_fingerprint(base)
