"""What merge and finetune write for a hub-like bfloat16 Llama-family base (issue 35 items 3, 5-7):
the adapter/base check by tensors not files, the adapter PEFT's AutoPeft finds its base from, and a
merged folder of the base's kind (its dtype, its config's form, its generation_config.json).

Oracles: transformers reads the merged folder (and, where an install of transformers 4.x is named
by LORA_NP_TRANSFORMERS4, that older version too: tests/transformers4_logits.py), PEFT reads the adapter.
"""

import json
import shutil

import pytest

from helpers import cli
from llama_oracle import tiny_qwen3_folder
from transformers4_logits import TRANSFORMERS4, transformers4_logits
from lora_np.app.cli import main
from lora_np.app.model_dir import base_fingerprint
from lora_np.io.safetensors_file import open_safetensors

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

PROSE = "RMSNorm drops the mean; RoPE rotates pairs of features by position.\n" * 20


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A bfloat16 Qwen3 base and a LoRA adapter trained on it for 2 steps."""
    root = tmp_path_factory.mktemp("merged")
    base = tiny_qwen3_folder(root / "base", dtype=torch.bfloat16)
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
    other = tiny_qwen3_folder(tmp_path / "other", seed=1, dtype=torch.bfloat16)
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


@pytest.fixture(scope="module")
def merged(trained, tmp_path_factory):
    base, adapter = trained
    # a hub-like base: written by transformers 4.x (rope_theta at the top level, its version), with decoding defaults
    config = json.loads((base / "config.json").read_text())
    config.pop("rope_parameters")  # a rope_theta no version defaults to, so that a reader missing it is caught
    config.update(rope_theta=250000.0, rope_scaling=None, transformers_version="4.42.3")
    (base / "config.json").write_text(json.dumps(config))
    (base / "generation_config.json").write_text(json.dumps({"bos_token_id": 151643, "eos_token_id": 151645,
                                                             "temperature": 0.7, "do_sample": True}))
    out = tmp_path_factory.mktemp("merged") / "merged"
    assert main(["merge", "--base", str(base), "--adapter", str(adapter), "--out", str(out), "--quiet"]) == 0
    return base, adapter, out


def _peft_merged_logits(base, adapter, ids):
    peft = pytest.importorskip("peft")
    model = peft.AutoPeftModelForCausalLM.from_pretrained(str(adapter), dtype=torch.float32)
    assert str(model.peft_config["default"].base_model_name_or_path) == str(base)
    return model.merge_and_unload().eval()(ids).logits.detach()


IDS = torch.tensor([[9707, 11, 1879, 0, 576, 13, 42, 7]])


def test_merged_folder_is_the_bases_kind(merged):
    """Item 7: bfloat16 like the base (the same size, not twice it), generation_config.json copied, no .lock."""
    base, _, out = merged
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "tokenizer_config.json"])
    assert {t.stored for t in open_safetensors(out / "model.safetensors")[0].values()} == {"BF16"}
    assert abs((out / "model.safetensors").stat().st_size - (base / "model.safetensors").stat().st_size) < 4096
    assert (out / "generation_config.json").read_bytes() == (base / "generation_config.json").read_bytes()
    config = json.loads((out / "config.json").read_text())
    assert config["torch_dtype"] == config["dtype"] == "bfloat16"


def test_merged_folder_is_read_by_transformers_as_peft_merges(merged):
    """Items 3 and 6: AutoPeft finds the base from the adapter (its absolute path, as given), and the
    merged folder (bfloat16) gives PEFT's merged logits up to bfloat16's rounding of the weights."""
    base, adapter, out = merged
    expected = _peft_merged_logits(base, adapter, IDS)
    got = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()(IDS).logits.detach()
    assert torch.allclose(got, expected, atol=0.05 * float(expected.abs().max()))
    assert (got.argmax(-1) == expected.argmax(-1)).float().mean() > 0.9


def test_merge_dtype_float32_keeps_every_bit_of_the_merge(merged, tmp_path):
    """--dtype float32: the merged weights as computed; the logits are PEFT's merged model's to float32 rounding."""
    base, adapter, _ = merged
    out = tmp_path / "merged32"
    assert main(["merge", "--base", str(base), "--adapter", str(adapter), "--out", str(out), "--quiet",
                 "--dtype", "float32"]) == 0
    assert {t.stored for t in open_safetensors(out / "model.safetensors")[0].values()} == {"F32"}
    expected = _peft_merged_logits(base, adapter, IDS)
    got = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()(IDS).logits.detach()
    assert torch.allclose(got, expected, atol=1e-4 * float(expected.abs().max()))


def test_merged_config_reads_the_same_in_both_forms(merged):
    """Item 3, without transformers 4.x at hand: what 4.x reads (rope_theta, rope_scaling at the top
    level; it ignores rope_parameters) and what 5.x reads are the base's RoPE, and the base's
    transformers_version is kept beside both forms."""
    base, _, out = merged
    config, base_config = (json.loads((d / "config.json").read_text()) for d in (out, base))
    assert config["rope_theta"] == base_config["rope_theta"] and config["rope_scaling"] is None
    assert config["rope_parameters"] == {"rope_type": "default", "rope_theta": base_config["rope_theta"]}
    assert config["transformers_version"] == "4.42.3"
    read = transformers.AutoConfig.from_pretrained(out)
    assert read.rope_parameters["rope_theta"] == base_config["rope_theta"]


@pytest.mark.skipif(not TRANSFORMERS4, reason="set LORA_NP_TRANSFORMERS4 to a `pip install --target` folder of "
                    "transformers 4.x (see tests/transformers4_logits.py)")
def test_transformers_4_reads_the_merged_folder(merged, tmp_path):
    """Item 3: transformers 4.x (a separate install, in a subprocess) reads the merged folder with the
    base's RoPE: its logits are 5.x's."""
    _, _, out = merged
    got = transformers4_logits(out, IDS, tmp_path)
    expected = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()(IDS).logits.detach()
    assert torch.allclose(torch.from_numpy(got), expected, atol=1e-4 * float(expected.abs().max()))
