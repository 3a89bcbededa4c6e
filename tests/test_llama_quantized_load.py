"""``load_model(path, quantize="nf4" | "int8")`` for the Llama family reads each Linear weight, quantizes
it and drops it: the float32 model is never built.

Oracles: (1) the float model loaded and then quantized in memory (``quantize_model``, the path the
loader replaces) gives bit-identical logits, for NF4 and int8, with and without double
quantization, fp32 / bf16 / sharded checkpoints, Llama, Qwen2 (q/k/v biases) and Qwen3 (q/k
norms, untied head), a bf16 file's token embedding / LM head kept as its words (a FrozenTable of the
same values); (2) tracemalloc: the load's peak stays within the loaded model's own bytes
plus a few float tensors, a bound that the load-then-quantize path exceeds by far (it is checked
to, so that the bound can fail).
"""

import tracemalloc

import numpy as np
import pytest
import torch

import lora_np as ln
from lora_np.io import safetensors_file
from lora_np.quant.bf16 import Bf16Weight
from lora_np.quant.linear import QuantLinear
from lora_np.quant.table import FrozenTable
from lora_np.quant.weight import QuantWeight
from llama_oracle import tiny_hf_llama

WIDE = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=8, head_dim=32)
CASES = {
    "llama-nf4": dict(kind="llama", scheme="nf4", double_quant=True),
    "llama-tied-int8-bf16": dict(kind="llama", scheme="int8", double_quant=False, dtype=torch.bfloat16,
                                 tie_word_embeddings=True),
    "qwen2-nf4-sharded-bf16": dict(kind="qwen2", scheme="nf4", double_quant=True, dtype=torch.bfloat16,
                                   max_shard_size="200KB"),
    "qwen3-untied-nf4-plain": dict(kind="qwen3", scheme="nf4", double_quant=False, tie_word_embeddings=False),
    "qwen3-int8-dq": dict(kind="qwen3", scheme="int8", double_quant=True),
}


def _folder(tmp_path, kind, dtype=torch.float32, **overrides):
    tiny_hf_llama(tmp_path, kind, dtype=dtype, **{**WIDE, **overrides})
    return tmp_path


def _model_bytes(model):
    """What the loaded model holds: its float parameters and every QuantWeight's codes and statistics."""
    total = sum(p.data.nbytes for p in model.parameters())
    for _, m in model.named_modules():
        w = getattr(m, "weight", None)
        if isinstance(w, QuantWeight):
            stats = w.stats[:2] if w.stats is not None else (w.absmax,)
            total += w.codes.nbytes + sum(s.nbytes for s in stats)
    return total


def _freeze_tables_as_bf16_words(ours, ref):
    """The loaded model's embedding / untied head are FrozenTables of bf16 words whose values are the float
    load's, exactly; ``ref``'s become FrozenTables of those values too, so the two models compare as wholes."""
    for module in [ref.model.embed_tokens] + ([ref.lm_head] if hasattr(ref, "lm_head") else []):
        name = "model.embed_tokens" if module is ref.model.embed_tokens else "lm_head"
        table = dict(ours.named_modules())[name].weight
        assert isinstance(table, FrozenTable) and table.store.codes.dtype == np.uint16, name
        assert np.array_equal(table.dequantize(), module.weight.data), name
        module.weight = FrozenTable(Bf16Weight.from_float(module.weight.data.T))


@pytest.mark.parametrize("case", CASES)
def test_quantized_load_equals_float_load_then_quantize(case, tmp_path, rng):
    spec = dict(CASES[case])
    scheme, dq = spec.pop("scheme"), spec.pop("double_quant")
    path = _folder(tmp_path, **spec)
    ours = ln.load_model(path, quantize=scheme, double_quant=dq)
    ref = ln.quantize_model(ln.load_model(path), scheme, 64, dq)
    if spec.get("dtype") == torch.bfloat16:  # a bf16 file's tables stay its words, the values the float load widens
        _freeze_tables_as_bf16_words(ours, ref)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]
    linears = [n for n, m in ours.named_modules() if isinstance(m, ln.nn.Linear)]
    assert len(linears) == 7 * WIDE["num_hidden_layers"]
    assert all(isinstance(m, QuantLinear) for n, m in ours.named_modules() if n in linears)
    assert repr(ours) == repr(ref) and not ours.training
    idx = rng.integers(0, 96, size=(2, 9))
    with ln.no_grad():
        assert np.array_equal(ln.to_numpy(ours(idx)[0].data), ln.to_numpy(ref(idx)[0].data))
    for (name, p), (_, q) in zip(ours.named_parameters(), ref.named_parameters()):
        assert np.array_equal(ln.to_numpy(p.data), ln.to_numpy(q.data)), name


def test_quantized_load_in_float64_equals_quantize_model(tmp_path, rng):
    path = _folder(tmp_path, "qwen2")
    ours = ln.load_model(path, dtype=np.float64, quantize="nf4")
    ref = ln.quantize_model(ln.load_model(path, dtype=np.float64), "nf4")
    idx = rng.integers(0, 96, size=(1, 7))
    with ln.no_grad():
        out = ln.to_numpy(ours(idx)[0].data)
        assert out.dtype == np.float64 and np.array_equal(out, ln.to_numpy(ref(idx)[0].data))


def _peak(load):
    tracemalloc.start()
    try:
        model = load()
        return model, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_quantized_load_peak_is_the_model_plus_a_few_tensors(tmp_path):
    """8 layers: the float32 model is 4.8 MB, its NF4 form ~0.7 MB, the largest tensor 131 kB."""
    path = _folder(tmp_path, "llama")
    float_model = ln.load_model(path)
    largest = max(p.data.nbytes for p in float_model.parameters())
    float_bytes = sum(p.data.nbytes for p in float_model.parameters())
    del float_model
    model, peak = _peak(lambda: ln.load_model(path, quantize="nf4"))
    bound = _model_bytes(model) + 8 * largest
    assert peak <= bound, (peak, bound)
    assert bound < float_bytes / 2
    del model
    _, old_peak = _peak(lambda: ln.quantize_model(ln.load_model(path), "nf4"))  # the float model, then codes
    assert old_peak > bound, (old_peak, bound)


def test_bad_block_size_is_refused_before_any_tensor_is_read(tmp_path, monkeypatch):
    path = _folder(tmp_path, "llama")
    reads = []
    original = safetensors_file.StoredTensor.read
    monkeypatch.setattr(safetensors_file.StoredTensor, "read", lambda self, *a: reads.append(1) or original(self, *a))
    with pytest.raises(ValueError, match=r"block_size=48 does not divide .*in_features"):
        ln.load_model(path, quantize="nf4", block_size=48)
    with pytest.raises(ValueError, match="block_size must be even"):
        ln.load_model(path, quantize="nf4", block_size=33)
    assert reads == []
