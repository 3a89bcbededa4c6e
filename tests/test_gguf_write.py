"""GGUF out: ``save_gguf`` read back by transformers' GGUF loader, the llama.cpp LoRA adapter file,
``merge --gguf``, and LoRA on the GGUF-quantized base (gradients equal to the float path's).

Oracles: transformers' ``from_pretrained(dir, gguf_file=...)`` for the model files; for the adapter
file, the adapted model computed from its tensors as llama.cpp computes it (W + alpha/r · BA with
r = lora_a's rows, after un-permuting q/k), and llama-cpp-python where it is importable.
"""

import numpy as np
import pytest

import lora_np as ln
from lora_np.io.gguf_names import hf_name, qk_heads, unpermute_rows
from lora_np.io.gguf_write import save_gguf, save_lora_gguf

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from gguf_files import write_tiny_gguf  # noqa: E402
from helpers import cli  # noqa: E402
from llama_oracle import tiny_hf_llama  # noqa: E402

SIZES = dict(hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2, head_dim=16)
IDS = np.array([[3, 17, 42, 5, 88, 0, 61, 9]])


def logits(model, ids=IDS):
    with ln.no_grad():
        return ln.to_numpy(model(ids)[0].data)


def hf_logits(path, ids=IDS):
    m = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    with torch.no_grad():
        return m(torch.tensor(ids)).logits.numpy()


@pytest.fixture(scope="module")
def adapted(tmp_path_factory):
    """A tiny llama loaded from a Q8_0 GGUF file with a trained-looking (non-zero) LoRA adapter."""
    root = tmp_path_factory.mktemp("adapted")
    path = write_tiny_gguf(root / "base.gguf", tiny_hf_llama(root / "hf", "llama", **SIZES), "Q8_0")
    model = ln.load_model(path)
    ln.add_lora(model, ln.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "down_proj"]))
    rng = np.random.default_rng(1)
    for name, p in model.named_parameters():
        if "lora_" in name:
            p.data[...] = 0.3 * rng.standard_normal(p.shape)
    return path, model


@pytest.mark.parametrize("outtype,tol", [("f16", 2e-2), ("q8_0", 6e-2)])
def test_merged_model_reads_back_in_transformers(tmp_path, adapted, outtype, tol):
    """The merged model written as GGUF: transformers reads it with our logits (F16/Q8_0 rounding
    apart: compared with our own model loaded from the written file exactly, and with the merged
    float model within the rounding of the format)."""
    base_path, model = adapted
    merged = ln.load_model(base_path)
    ln.add_lora(merged, model.peft_config["default"])
    for (_, p), (_, q) in zip(merged.named_parameters(), model.named_parameters()):
        p.data[...] = q.data
    ln.merge_and_unload(merged)
    out = save_gguf(merged, tmp_path / f"merged-{outtype}.gguf", outtype, tokenizer_from=base_path)
    theirs = hf_logits(out)
    np.testing.assert_allclose(logits(ln.load_model(out)), theirs, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(theirs, logits(merged), atol=tol * np.abs(theirs).max())
    np.testing.assert_allclose(logits(merged), logits(model), rtol=1e-4, atol=1e-4)
    reader = gguf.GGUFReader(out)
    assert reader.fields["tokenizer.ggml.tokens"].contents() == [f"t{i}" for i in range(96)]
    assert {t.tensor_type.name for t in reader.tensors if len(t.shape) == 2} == {outtype.upper()}


def test_lora_adapter_file_as_llama_cpp_reads_it(tmp_path, adapted):
    """adapter.gguf holds what convert_lora_to_gguf.py writes; applying it as llama.cpp does (W + alpha/r·BA
    on the base file's matrices, then HF row order back) gives our adapted model's logits."""
    base_path, model = adapted
    out = save_lora_gguf(model, tmp_path / "adapter.gguf")
    r = gguf.GGUFReader(out)
    assert r.fields["general.type"].contents() == "adapter" and r.fields["adapter.type"].contents() == "lora"
    alpha = r.fields["adapter.lora.alpha"].contents()
    assert alpha == pytest.approx(8.0)
    lora = {t.name: np.array(t.data) for t in r.tensors}
    assert lora["blk.0.attn_q.weight.lora_a"].shape == (4, 64) and lora["blk.0.attn_q.weight.lora_b"].shape == (64, 4)
    base = gguf.GGUFReader(base_path)
    merged = ln.load_model(base_path)
    params = dict(merged.named_parameters())
    for t in base.tensors:
        if t.name + ".lora_a" not in lora:
            continue
        a, b = lora[t.name + ".lora_a"], lora[t.name + ".lora_b"]
        w = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type) + alpha / a.shape[0] * (b @ a)
        hf = hf_name(t.name)
        heads = qk_heads(hf, {"num_attention_heads": 4, "num_key_value_heads": 2})
        params[hf].data[...] = (unpermute_rows(w, heads) if heads else w).T
    np.testing.assert_allclose(logits(merged), logits(model), rtol=1e-4, atol=1e-4)


def test_llama_cpp_python_reads_base_and_adapter(tmp_path, adapted):
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (its sdist builds "
                                    "llama.cpp with cmake); the adapter file is checked against llama.cpp's "
                                    "formula in test_lora_adapter_file_as_llama_cpp_reads_it")
    base_path, model = adapted
    out = save_lora_gguf(model, tmp_path / "adapter.gguf")
    llm = llama_cpp.Llama(model_path=str(base_path), lora_path=str(out), logits_all=True, verbose=False)
    llm.eval(IDS[0].tolist())
    theirs = np.array(llm.scores[len(IDS[0]) - 1])
    np.testing.assert_allclose(theirs, logits(model)[0, -1], atol=5e-2 * np.abs(theirs).max())


def test_merge_command_writes_gguf(tmp_path, capsys):
    """``merge --gguf q8_0``: model.gguf (read back by transformers, tokenizer fields built from the
    folder's tokenizer.json) and adapter.gguf."""
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.ByteLevelBPETokenizer()
    tok.train_from_iterator(["the cat sat on the mat"] * 20, vocab_size=270, special_tokens=["<|endoftext|>"])
    tiny_hf_llama(tmp_path / "base", "llama", **{**SIZES, "vocab_size": 272})
    tok.save(str(tmp_path / "base" / "tokenizer.json"))
    model = ln.load_model(tmp_path / "base")
    ln.add_lora(model, ln.LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "o_proj"]))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data[...] = 0.2
    ln.save_adapter(model, tmp_path / "adapter")
    cli(capsys, "merge", "--base", str(tmp_path / "base"), "--adapter", str(tmp_path / "adapter"),
        "--out", str(tmp_path / "out"), "--gguf", "q8_0")
    out = tmp_path / "out" / "model.gguf"
    ln.merge_and_unload(model)
    theirs = hf_logits(out)
    np.testing.assert_allclose(theirs, logits(model), atol=6e-2 * np.abs(theirs).max())
    r = gguf.GGUFReader(out)
    vocab = tok.get_vocab()
    tokens = r.fields["tokenizer.ggml.tokens"].contents()
    assert len(tokens) == 272 and all(tokens[i] == t for t, i in vocab.items())
    assert len(r.fields["tokenizer.ggml.merges"].data) > 0
    assert gguf.GGUFReader(tmp_path / "out" / "adapter.gguf").fields["adapter.type"].contents() == "lora"


def test_lora_gradients_on_gguf_base_equal_float_path(tmp_path):
    """dL/dA and dL/dB on the Q4_1 base (blocks decoded tile by tile, forward and dX) equal the float
    path's on the dequantized weights, float64; the frozen base gets no gradient."""
    path = write_tiny_gguf(tmp_path / "m.gguf", tiny_hf_llama(tmp_path / "hf", "llama", **SIZES), "Q4_1")
    grads = []
    for quantize in ("gguf", None):
        model = ln.load_model(path, dtype=np.float64, quantize=quantize)
        targets = ["q_proj", "v_proj", "up_proj", "down_proj"]
        ln.add_lora(model, ln.LoraConfig(r=4, lora_alpha=8, target_modules=targets))
        rng = np.random.default_rng(0)  # the same A and B for both models: parameters come in the same order
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.data[...] = 0.1 * rng.standard_normal(p.shape)
        model.train()
        _, loss = model(IDS[:, :-1], IDS[:, 1:])
        loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    assert set(grads[0]) == set(grads[1]) and all("lora_" in n for n in grads[0])
    for name in grads[0]:
        np.testing.assert_allclose(grads[0][name], grads[1][name], rtol=1e-10, atol=1e-12, err_msg=name)
