"""finetune, generate, eval and merge on a Llama-family folder (a tiny random Qwen3 written by
transformers, with Qwen's real tokenizer.json), as on a GPT-2 folder.

Oracles: PEFT on transformers' model reads the adapter the CLI wrote, and transformers reads the
merged folder: both give the same logits.
"""

import numpy as np
import pytest

from helpers import cli
from llama_oracle import tiny_qwen3_folder

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
from peft_oracle import assert_merged_folder_is_peft  # noqa: E402 (needs torch, skipped above)

PROSE = ("Grouped-query attention shares each key and value head among several query heads. "
         "RMSNorm drops the mean; RoPE rotates pairs of features by position.\n") * 10


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    return tiny_qwen3_folder(tmp_path_factory.mktemp("qwen3") / "tiny-qwen3")


def test_every_command_on_a_qwen3_folder(qwen_dir, tmp_path, capsys, backend_name):
    text = tmp_path / "prose.txt"
    text.write_text(PROSE)
    adapter = tmp_path / "adapter"
    code, _, err = cli(capsys, "finetune", "--base", qwen_dir, "--data", text, "--out", adapter, "--steps", 4,
                       "--eval-every", 2, "--batch-size", 2, "--block-size", 32, "--lora-r", 4,
                       "--targets", "all-linear", "--lr", "3e-2", "--quiet")
    assert code == 0, err
    assert (adapter / "tokenizer.json").read_bytes() == (qwen_dir / "tokenizer.json").read_bytes()
    code, out, err = cli(capsys, "generate", "--model", qwen_dir, "--adapter", adapter, "--prompt", "RoPE rotates",
                         "--max-new-tokens", 4)
    assert code == 0 and out.startswith("RoPE rotates"), err
    code, out, err = cli(capsys, "eval", "--model", qwen_dir, "--adapter", adapter, "--data", text,
                         "--block-size", 32, "--json")
    assert code == 0, err
    merged = tmp_path / "merged"
    code, _, err = cli(capsys, "merge", "--base", qwen_dir, "--adapter", adapter, "--out", merged)
    assert code == 0, err
    ids = torch.tensor([[9707, 11, 1879, 0, 576, 13]])
    assert_merged_folder_is_peft(transformers.Qwen3ForCausalLM, qwen_dir, adapter, merged, ids)
    assert np.isfinite(float(out.split('"loss": ')[1].split(",")[0].rstrip("}")))


def test_finetune_without_targets_uses_pefts_default_for_the_family(qwen_dir, tmp_path, capsys):
    """No --targets on a Qwen3 folder: PEFT's own default for qwen3 (q_proj, v_proj), said on stderr;
    a target that matches nothing names only the embedding this model has (embed_tokens, not wte)."""
    text = tmp_path / "prose.txt"
    text.write_text(PROSE)
    adapter = tmp_path / "adapter"
    code, _, err = cli(capsys, "finetune", "--base", qwen_dir, "--data", text, "--out", adapter, "--steps", 1,
                       "--batch-size", 1, "--block-size", 16, "--lora-r", 2)
    assert code == 0, err
    assert "LoRA on q_proj,v_proj" in err
    saved = peft.LoraConfig.from_pretrained(str(adapter))
    expected = peft.utils.constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING["qwen3"]
    assert set(saved.target_modules) == set(expected)
    code, _, err = cli(capsys, "finetune", "--base", qwen_dir, "--data", text, "--out", tmp_path / "x",
                       "--steps", 1, "--targets", "c_attn")
    assert code == 2 and "match no Linear" in err and "embed_tokens" in err and "wte" not in err, err
