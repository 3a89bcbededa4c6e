"""A frozen base kept in bfloat16 (``quantize="bf16"``, quant/bf16.py): half the bytes of float32, the
same function.

Oracles: torch's own float32 -> bfloat16 rounding (the words), the float32 model loaded from the same
bf16 folder (each value widened exactly, so the bf16 model must give the same logits and LoRA
gradients up to float32 summation order), and tracemalloc (loading never holds the float32 linears).
"""

import tracemalloc

import numpy as np
import pytest
import torch

import lora_np as ln
from helpers import cli
from lora_np.app.model_dir import frozen_storage, stored_dtype
from lora_np.quant.bf16 import Bf16Weight, bf16_words, widen_bf16
from lora_np.quant.linear import QuantLinear
from llama_oracle import tiny_hf_llama

WIDE = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4, head_dim=32)
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _torch_words(x):
    as_bf16 = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(torch.bfloat16)
    return as_bf16.view(torch.int16).numpy().view(np.uint16)


def test_words_round_as_torch_and_widen_exactly(rng):
    x = (rng.standard_normal(50_000) * 3).astype(np.float32)
    ties = (np.arange(1, 200, dtype=np.uint32) << 16 | 0x8000).view(np.float32)  # exactly half-way: ties to even
    x = np.concatenate([x, ties, -ties, np.float32([np.inf, -np.inf, 0.0, -0.0, 3e38, 1e-40])])
    words = bf16_words(x)
    assert words.dtype == np.uint16 and np.array_equal(words, _torch_words(x))
    widened = widen_bf16(words)
    assert np.array_equal(widened, torch.from_numpy(x).to(torch.bfloat16).float().numpy())
    assert np.isnan(widen_bf16(bf16_words(np.float32([np.nan])))).all()


def test_bf16_weight_matmul_equals_the_float32_matmul_of_its_values(rng):
    w = rng.standard_normal((96, 80)).astype(np.float32)
    q = Bf16Weight.from_float(w)
    w16 = q.dequantize()
    assert q.nbytes == w.nbytes // 2 and np.array_equal(w16, widen_bf16(_torch_words(w.T)).T)
    x = ln.Tensor(rng.standard_normal((3, 5, 96)).astype(np.float32), requires_grad=True)
    y = QuantLinear(q)(x)
    np.testing.assert_allclose(y.data, x.data @ w16, rtol=1e-5, atol=1e-5)
    g = rng.standard_normal(y.shape).astype(np.float32)
    y.backward(g)
    np.testing.assert_allclose(x.grad, g @ w16.T, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["llama", "qwen3"])
def test_bf16_folder_gives_the_float32_models_logits_and_lora_gradients(kind, tmp_path, rng):
    tiny_hf_llama(tmp_path, kind, dtype=torch.bfloat16, **WIDE)
    assert stored_dtype(tmp_path) == "bfloat16"
    ours, ref = ln.load_model(tmp_path, quantize="bf16"), ln.load_model(tmp_path)
    for (name, m), (_, r) in zip(ours.named_modules(), ref.named_modules()):
        if isinstance(m, ln.nn.Linear):
            assert isinstance(m.weight, Bf16Weight) and m.weight.codes.dtype == np.uint16, name
            assert np.array_equal(m.weight.dequantize(), r.weight.data), name  # the file's words, as they are
    idx = rng.integers(0, 96, size=(2, 9))
    with ln.no_grad():
        np.testing.assert_allclose(ours(idx)[0].data, ref(idx)[0].data, rtol=1e-4, atol=1e-5)
    grads = []
    for model in (ours, ref):
        ln.manual_seed(0)
        config = ln.LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights="gaussian")
        ln.add_lora(model.train(), config)
        _, loss = model(idx, np.roll(idx, -1, axis=1))
        loss.backward()
        trainable = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
        assert all("lora_" in n for n in trainable) and all(g is not None for g in trainable.values())
        grads.append((loss.item(), trainable))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-6)
    for name, g in grads[1][1].items():  # gradients up to ~2: atol 1e-5 is float32 summation-order noise
        np.testing.assert_allclose(grads[0][1][name], g, rtol=1e-4, atol=1e-5, err_msg=name)
    assert all(p.grad is None for n, p in ours.named_parameters() if not p.requires_grad)


def test_float32_folder_is_rounded_as_torch_rounds(tmp_path):
    tiny_hf_llama(tmp_path, "llama", **WIDE)
    model = ln.load_model(tmp_path, quantize="bf16")
    ref = ln.load_model(tmp_path)
    in_memory = ln.quantize_model(ln.load_model(tmp_path), "bf16")
    for (name, m), (_, r), (_, q) in zip(model.named_modules(), ref.named_modules(), in_memory.named_modules()):
        if isinstance(m, ln.nn.Linear):
            assert np.array_equal(m.weight.codes, _torch_words(r.weight.data.T)), name
            assert np.array_equal(q.weight.codes, m.weight.codes), name


def test_bf16_load_never_holds_the_float32_linears(tmp_path):
    tiny_hf_llama(tmp_path, "llama", dtype=torch.bfloat16, **{**WIDE, "num_hidden_layers": 8})
    ref = ln.load_model(tmp_path)
    linear_f32 = sum(m.weight.data.nbytes for _, m in ref.named_modules() if isinstance(m, ln.nn.Linear))
    largest = max(p.data.nbytes for p in ref.parameters())
    held = sum(p.data.nbytes for p in ref.parameters()) - linear_f32 // 2  # the bf16 model's own bytes
    del ref
    tracemalloc.start()
    try:
        model = ln.load_model(tmp_path, quantize="bf16")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= held + 3 * largest, (peak, held, largest)
    assert held + 3 * largest < held + linear_f32 // 2  # the bound would fail with the float32 linears held
    assert "bf16" in repr(model)


def test_bf16_base_in_float64_compute(tmp_path, rng):
    tiny_hf_llama(tmp_path, "qwen2", dtype=torch.bfloat16, **WIDE)
    ours, ref = ln.load_model(tmp_path, dtype=np.float64, quantize="bf16"), ln.load_model(tmp_path, dtype=np.float64)
    idx = rng.integers(0, 96, size=(1, 7))
    with ln.no_grad():
        out = ours(idx)[0].data
        assert out.dtype == np.float64
        np.testing.assert_allclose(out, ref(idx)[0].data, rtol=1e-10, atol=1e-12)


def test_base_dtype_flag_resolution(tmp_path, monkeypatch):
    bf16, f32 = tmp_path / "bf16", tmp_path / "f32"
    tiny_hf_llama(bf16, "llama", dtype=torch.bfloat16, **WIDE)
    tiny_hf_llama(f32, "llama", **WIDE)
    assert frozen_storage(bf16) == "bf16" and frozen_storage(f32) is None  # auto: the folder's own dtype
    assert frozen_storage(bf16, needs_float=True) is None and frozen_storage(bf16, "float32") is None
    assert frozen_storage(f32, "bfloat16") == "bf16" and frozen_storage(bf16, quantize="nf4") == "nf4"
    with pytest.raises(ValueError, match="choose one"):
        frozen_storage(bf16, "bfloat16", quantize="nf4")
    with pytest.raises(ValueError, match="need its float weights"):
        frozen_storage(bf16, "bfloat16", needs_float=True)
    with pytest.raises(ValueError, match="accepted auto, float32, bfloat16"):
        frozen_storage(bf16, "fp8")
    assert frozen_storage(bf16, decoding=True) is None  # generate: float32 decodes faster, and it fits here
    assert frozen_storage(bf16, "bfloat16", decoding=True) == "bf16"  # asked for
    monkeypatch.setattr("lora_np.app.model_dir.available_bytes", lambda: 1 << 20)  # ... unless it does not fit
    assert frozen_storage(bf16, decoding=True) == "bf16"


def test_cli_finetunes_and_generates_on_a_bf16_base(tmp_path, capsys):
    tokenizer_folders = pytest.importorskip("tokenizer_folders")
    folder = tokenizer_folders.write_folder(tmp_path / "qwen3", "qwen")
    tiny_hf_llama(folder, "qwen3", dtype=torch.bfloat16, vocab_size=151936, max_position_embeddings=64)
    text = tmp_path / "prose.txt"
    text.write_text("RMSNorm drops the mean; RoPE rotates pairs of features by position.\n" * 20)
    code, _, err = cli(capsys, "finetune", "--base", folder, "--data", text, "--out", tmp_path / "adapter",
                       "--steps", 2, "--batch-size", 1, "--block-size", 16, "--lora-r", 2, "--quiet")
    assert code == 0, err
    outputs = []
    for flag in ("bfloat16", "float32"):
        code, out, err = cli(capsys, "generate", "--model", folder, "--adapter", tmp_path / "adapter",
                             "--prompt", "RoPE rotates", "--max-new-tokens", 4, "--base-dtype", flag)
        assert code == 0, err
        outputs.append(out)
    assert outputs[0] == outputs[1]
    code, _, err = cli(capsys, "finetune", "--base", folder, "--data", text, "--out", tmp_path / "x", "--steps", 1,
                       "--dora", "--base-dtype", "bfloat16")
    assert code == 2 and "float weights" in err, err
