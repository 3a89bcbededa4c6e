"""GPT-2 checkpoint files both ways with Hugging Face (our files -> from_pretrained, theirs -> ours),
the original hub key layout, float16/bfloat16 files, atomic writes, and damaged checkpoints."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file as torch_save

from lora_np import GPT, GPTConfig, load_gpt2, save_gpt2, to_numpy
from lora_np.io.safetensors_file import read_safetensors, write_safetensors
from hf_oracle import TINY, max_rel_err, tiny_hf_gpt2


def _tiny_model(dtype=np.float64):
    return GPT(GPTConfig(vocab_size=61, block_size=16, n_layer=2, n_head=4, n_embd=32), dtype=dtype)


def test_our_files_load_in_transformers(tmp_path, rng):
    from transformers import GPT2LMHeadModel
    ours = _tiny_model()
    save_gpt2(ours, tmp_path)
    hf = GPT2LMHeadModel.from_pretrained(tmp_path, dtype=torch.float64).eval()
    idx = rng.integers(0, 61, size=(2, 10))
    assert max_rel_err(to_numpy(ours(idx)[0]), hf(torch.tensor(idx)).logits) < 1e-12
    assert json.loads((tmp_path / "config.json").read_text())["n_positions"] == 16


def test_round_trip_preserves_every_parameter(tmp_path):
    ours = _tiny_model(np.float32)
    save_gpt2(ours, tmp_path)
    back = load_gpt2(tmp_path)
    for (n, a), (m, b) in zip(ours.named_parameters(), back.named_parameters()):
        assert n == m
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    assert not back.training  # like from_pretrained


def test_hub_layout_without_prefix_with_buffers_in_half_precision(tmp_path, rng):
    hf = tiny_hf_gpt2(tmp_path / "hf", dtype=torch.float32)
    sd = {k.removeprefix("transformer."): v for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    for i in range(TINY["n_layer"]):
        sd[f"h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, 16, 16))  # the old causal-mask buffers
    for dtype in (torch.float16, torch.bfloat16):
        d = tmp_path / str(dtype)
        d.mkdir()
        (d / "config.json").write_text((tmp_path / "hf" / "config.json").read_text())
        torch_save({k: v.to(dtype).contiguous() for k, v in sd.items()}, str(d / "model.safetensors"),
                   metadata={"format": "pt"})
        ours = load_gpt2(d)
        want = {k: v.to(dtype).float().numpy() for k, v in sd.items() if not k.endswith(".attn.bias")}
        for name, p in ours.named_parameters():
            np.testing.assert_array_equal(to_numpy(p), want[name.removeprefix("transformer.")])


def test_missing_directory_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_gpt2(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_gpt2(tmp_path)
    save_gpt2(_tiny_model(), tmp_path)
    (tmp_path / "model.safetensors").rename(tmp_path / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="pickle"):
        load_gpt2(tmp_path)


def test_config_disagreeing_with_tensors_names_the_key(tmp_path):
    save_gpt2(_tiny_model(), tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(dict(cfg, n_embd=64, n_head=4)))
    with pytest.raises(ValueError,
                       match=r"implies transformer.wte.weight of shape \(61, 64\); the weights hold \(61, 32\)"):
        load_gpt2(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(dict(cfg, n_layer=3)))
    with pytest.raises(ValueError, match=r"n_layer=3; the weights hold 2 layers"):
        load_gpt2(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(dict(cfg, n_head=8)))  # same sizes, fine: heads split C
    assert load_gpt2(tmp_path).config.n_head == 8


@pytest.mark.parametrize("edit,match", [
    (dict(activation_function="relu"), "activation_function"), (dict(n_inner=7), "n_inner"),
    (dict(layer_norm_epsilon=1e-6), "layer_norm_epsilon"), (dict(scale_attn_by_inverse_layer_idx=True), "scale_attn"),
    (dict(n_head=5), "divisible"), (dict(vocab_size=0), "vocab_size")])
def test_unsupported_configs(tmp_path, edit, match):
    save_gpt2(_tiny_model(), tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, **edit}))
    with pytest.raises(ValueError, match=match):
        load_gpt2(tmp_path)


def test_corrupt_config_and_weights(tmp_path):
    save_gpt2(_tiny_model(), tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_gpt2(tmp_path)
    save_gpt2(_tiny_model(), tmp_path)
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated"):
        load_gpt2(tmp_path)


def test_untied_lm_head_and_foreign_tensors_are_refused(tmp_path):
    save_gpt2(_tiny_model(), tmp_path)
    tensors, meta = read_safetensors(tmp_path / "model.safetensors")
    write_safetensors(tmp_path / "model.safetensors",
                      dict(tensors, **{"lm_head.weight": tensors["transformer.wte.weight"] + 1}), meta)
    with pytest.raises(ValueError, match="lm_head"):
        load_gpt2(tmp_path)
    write_safetensors(tmp_path / "model.safetensors", dict(tensors, **{"score.weight": np.ones(2)}), meta)
    with pytest.raises(ValueError, match="score.weight"):
        load_gpt2(tmp_path)


def test_dtype_argument(tmp_path):
    save_gpt2(_tiny_model(), tmp_path)
    assert load_gpt2(tmp_path, dtype="float64").dtype == np.float64
    with pytest.raises(ValueError, match="float32 or float64"):
        load_gpt2(tmp_path, dtype=np.int8)


def test_save_refuses_non_gpt_and_bias_free_models(tmp_path):
    with pytest.raises(TypeError, match="GPT"):
        save_gpt2(object(), tmp_path)
    with pytest.raises(ValueError, match="bias"):
        save_gpt2(GPT(GPTConfig(vocab_size=5, block_size=4, n_layer=1, n_head=1, n_embd=4, bias=False)), tmp_path)


def test_load_reads_tensor_by_tensor(tmp_path, backend_name):
    """Closed-form bound: loading holds the model plus about one tensor at a time (its raw bytes and
    the cast copy), never the whole file beside the model (that would be ~2x the parameters more)."""
    if backend_name != "numpy":
        pytest.skip("tracemalloc sees host memory only")
    import tracemalloc
    model = GPT(GPTConfig(vocab_size=96, block_size=32, n_layer=2, n_head=4, n_embd=128))
    save_gpt2(model, tmp_path / "ckpt")
    largest = max(p.data.nbytes for p in model.parameters())
    tracemalloc.start()
    loaded = load_gpt2(tmp_path / "ckpt")
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak - held < 3 * largest, f"load peaked {peak - held} bytes above the model; one tensor is {largest}"
    for (name, a), (_, b) in zip(model.named_parameters(), loaded.named_parameters()):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b), err_msg=name)
