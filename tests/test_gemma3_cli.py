"""finetune, generate, eval, merge (to a folder and to GGUF) and chat on Gemma 3: a tiny random Gemma 3
folder written by transformers with a Gemma-style tokenizer.json, and the GGUF file of the same model.

Oracles: PEFT on transformers' Gemma3ForCausalLM reads the adapter the CLI wrote and transformers
reads the merged folder: the same logits; transformers' GGUF loader reads merge --gguf's model.gguf
with the merged folder's logits (Q8_0 rounding apart); transformers' apply_chat_template gives the
conversation ids that finetune --data chat.jsonl trains on, from the folder and from
the GGUF file's tokenizer alike.
"""

import json

import numpy as np
import pytest

import lora_np as ln
from helpers import cli
from lora_np.io.gguf_write import save_gguf

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("gguf")
pytest.importorskip("tokenizers")
from gemma3_oracle import tiny_gemma_tokenizer, tiny_hf_gemma3  # noqa: E402
from peft_oracle import assert_merged_folder_is_peft  # noqa: E402
from test_gemma3_gguf_write import LLAMA_CPP_SHAPE  # noqa: E402

PROSE = ("the cat sat on the mat. Grouped-query attention shares keys and values. "
         "Gemma scales the embedding and normalises every sublayer twice.\n") * 8
CONVERSATIONS = [[{"role": "user", "content": "the cat sat on"}, {"role": "assistant", "content": "the mat"}],
                 [{"role": "user", "content": "Gemma scales"}, {"role": "assistant", "content": "the embedding"}]] * 4
IDS = torch.tensor([[2, 17, 42, 5, 88, 0, 61, 9, 100, 33]])


@pytest.fixture(scope="module")
def gemma_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gemma3") / "tiny-gemma3"
    tiny_hf_gemma3(folder, vocab_size=tiny_gemma_tokenizer(folder, [PROSE]), **LLAMA_CPP_SHAPE)
    return folder


@pytest.fixture(scope="module")
def gemma_gguf(gemma_dir, tmp_path_factory):
    """The same model as a Q8_0 GGUF file with its tokenizer (save_gguf: checked in test_gemma3_gguf_write)."""
    return save_gguf(ln.load_model(gemma_dir), tmp_path_factory.mktemp("gguf") / "tiny-gemma3.gguf", "q8_0",
                     tokenizer_from=gemma_dir)


def _finetune(capsys, base, data, adapter, *extra):
    code, _, err = cli(capsys, "finetune", "--base", base, "--data", data, "--out", adapter, "--steps", 3,
                       "--batch-size", 2, "--block-size", 24, "--lora-r", 4, "--lr", "3e-2", "--quiet", *extra)
    assert code == 0, err


def _gguf_logits(path):
    m = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    with torch.no_grad():
        return m.eval()(IDS).logits.numpy()


def _finetune_generate_eval(capsys, base, tmp_path, targets):
    """finetune on prose, then generate and eval with the adapter; returns the adapter folder."""
    text = tmp_path / "prose.txt"
    text.write_text(PROSE)
    adapter = tmp_path / "adapter"
    _finetune(capsys, base, text, adapter, "--targets", targets)
    code, out, err = cli(capsys, "generate", "--model", base, "--adapter", adapter, "--prompt", "the cat",
                         "--max-new-tokens", 4)
    assert code == 0 and out.startswith("the cat"), err
    code, out, err = cli(capsys, "eval", "--model", base, "--adapter", adapter, "--data", text,
                         "--block-size", 24, "--json")
    assert code == 0 and np.isfinite(json.loads(out)["loss"]), err
    return adapter


def test_every_command_on_a_gemma3_folder(gemma_dir, tmp_path, capsys):
    adapter = _finetune_generate_eval(capsys, gemma_dir, tmp_path, "all-linear")
    merged = tmp_path / "merged"
    code, _, err = cli(capsys, "merge", "--base", gemma_dir, "--adapter", adapter, "--out", merged)
    assert code == 0, err
    assert_merged_folder_is_peft(transformers.Gemma3ForCausalLM, gemma_dir, adapter, merged, IDS)
    code, _, err = cli(capsys, "merge", "--base", gemma_dir, "--adapter", adapter, "--out", tmp_path / "gguf",
                       "--gguf", "q8_0")
    assert code == 0, err
    with torch.no_grad():
        expected = transformers.Gemma3ForCausalLM.from_pretrained(merged).eval()(IDS).logits.numpy()
    theirs = _gguf_logits(tmp_path / "gguf" / "model.gguf")
    np.testing.assert_allclose(theirs, expected, atol=6e-2 * np.abs(expected).max())
    assert (tmp_path / "gguf" / "adapter.gguf").is_file()


def test_every_command_on_a_gemma3_gguf_base(gemma_gguf, tmp_path, capsys):
    adapter = _finetune_generate_eval(capsys, gemma_gguf, tmp_path, "q_proj,v_proj,down_proj")
    code, _, err = cli(capsys, "merge", "--base", gemma_gguf, "--adapter", adapter, "--out", tmp_path / "merged")
    assert code == 0, err
    with ln.no_grad():
        model = ln.load_model(gemma_gguf)
        ln.load_adapter(model, adapter)
        adapted = ln.to_numpy(model(IDS.numpy())[0].data)
    with torch.no_grad():
        folder = transformers.Gemma3ForCausalLM.from_pretrained(tmp_path / "merged").eval()(IDS).logits.numpy()
    np.testing.assert_allclose(folder, adapted, rtol=1e-4, atol=1e-4)
    code, _, err = cli(capsys, "merge", "--base", gemma_gguf, "--adapter", adapter, "--out", tmp_path / "gguf",
                       "--gguf", "f16")
    assert code == 0, err
    np.testing.assert_allclose(_gguf_logits(tmp_path / "gguf" / "model.gguf"), adapted,
                               atol=2e-2 * np.abs(adapted).max())


@pytest.mark.parametrize("where", ["folder", "gguf"])
def test_chat_finetune_and_generate_on_gemma3(where, gemma_dir, gemma_gguf, tmp_path, capsys):
    """finetune on conversations (Gemma's <start_of_turn> template), then generate --chat: the turn
    markers never reach the output."""
    base = gemma_dir if where == "folder" else gemma_gguf
    theirs = transformers.AutoTokenizer.from_pretrained(gemma_dir)
    for conversation in CONVERSATIONS[:2]:
        assert ln.load_tokenizer(base).apply_chat_template(conversation) == theirs.apply_chat_template(
            conversation, tokenize=True, return_dict=False)
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps({"messages": c}) + "\n" for c in CONVERSATIONS))
    adapter = tmp_path / "adapter"
    _finetune(capsys, base, data, adapter)
    code, out, err = cli(capsys, "generate", "--model", base, "--adapter", adapter, "--chat", "--prompt",
                         "the cat sat on", "--max-new-tokens", 4)
    assert code == 0, err
    assert "<start_of_turn>" not in out and "<end_of_turn>" not in out
