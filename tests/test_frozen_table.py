"""The token embedding / LM head kept frozen in the checkpoint's storage (quant/table.py's FrozenTable):
bfloat16 words or GGUF blocks, widened band by band in the fused head, row by row in the lookup.

Oracles: the plain references on the widened table (``E.dequantize()`` as a float Tensor: ``E[ids]``,
``matmul(h, Eᵀ)``, ``reference.lm_head_loss``), and the float32 model loaded from the same file
(whose table holds the same values, widened at load), tied and untied, in float32 and float64.
"""

import numpy as np
import pytest
import torch

import lora_np as ln
from lora_np import ops
from lora_np.ops import reference
from lora_np.quant.bf16 import Bf16Weight
from lora_np.quant.table import FrozenTable, table_logits
from llama_oracle import tiny_hf_llama

WIDE = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, head_dim=16, vocab_size=300)
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _tables(rng, dtype=np.float32):
    """The same random (V, C) table as bf16 words and as GGUF Q8_0 blocks (when gguf is importable)."""
    e = rng.standard_normal((300, 64)).astype(np.float32)
    tables = [FrozenTable(Bf16Weight.from_float(e.T, dtype=dtype))]
    try:
        from lora_np.quant.gguf_weight import GGUFWeight
        tables.append(FrozenTable(GGUFWeight.from_float(e.T, "Q8_0", dtype=dtype)))
    except ImportError:
        pass
    return tables


def assert_same_lora_step(ours, ref, idx):
    """The same seeded LoRA on both models: the same loss and the same adapter gradients (float32 rounding)."""
    grads = []
    for model in (ours, ref):
        ln.manual_seed(0)
        ln.add_lora(model.train(), ln.LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS,
                                                 init_lora_weights="gaussian"))
        _, loss = model(idx, np.roll(idx, -1, axis=1))
        loss.backward()
        grads.append((loss.item(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-6)
    assert grads[0][1].keys() == grads[1][1].keys()
    for name, g in grads[1][1].items():
        np.testing.assert_allclose(grads[0][1][name], g, rtol=1e-4, atol=1e-6, err_msg=name)


def assert_table_ops_equal_the_plain_references(table, rng, dtype, width=64):
    """Lookup, logits and the fused head on ``table`` against the same ops on its widened values."""
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    e = table.dequantize()
    assert e.shape == (300, width) and e.dtype == dtype and table.nbytes < e.nbytes / 2 + 1
    ids = rng.integers(0, 300, size=(3, 7))
    assert np.array_equal(ops.embedding(ids, table).data, e[ids])
    h = rng.standard_normal((3, 7, width)).astype(dtype)
    targets = np.where(rng.random((3, 7)) < 0.2, -1, rng.integers(0, 300, size=(3, 7)))
    results = []
    for weight in (table, ln.Tensor(e)):  # frozen; the plain reference on the widened values
        x = ln.Tensor(h.copy(), requires_grad=True)
        logits = ops.lm_head(x, weight)
        g = np.cos(np.arange(logits.size, dtype=dtype)).reshape(logits.shape)
        logits.backward(g)
        x2 = ln.Tensor(h.copy(), requires_grad=True)
        loss = ops.lm_head_loss(x2, weight, targets, block=37)  # several blocks per thread
        loss.backward()
        results.append((logits.data, x.grad, loss.item(), x2.grad))
    ref = reference.lm_head_loss(ln.Tensor(h), ln.Tensor(e), targets)
    assert results[0][2] == pytest.approx(ref.item(), rel=1e-6 if dtype == np.float32 else 1e-12)
    for ours, plain in zip(results[0], results[1]):
        np.testing.assert_allclose(ours, plain, **tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lookup_logits_and_fused_head_equal_the_plain_references(rng, dtype):
    for table in _tables(rng, dtype):
        assert_table_ops_equal_the_plain_references(table, rng, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_q6_k_table_as_llama_cpp_stores_a_tied_head(rng, dtype):
    """A (300, 256) table in Q6_K blocks (random codes and sub-block scales, finite d), the type llama.cpp's
    quantizer gives a tied token table: it widens to what gguf.quants.Q6_K decodes (the same bits), and
    the lookup, logits and fused head equal the plain ops on those values."""
    gguf = pytest.importorskip("gguf")
    from lora_np.quant.gguf_weight import GGUFWeight
    blocks = rng.integers(0, 256, (300, 210), dtype=np.uint8)
    blocks[:, 208:] = (rng.random((300, 1)) * 1e-3).astype(np.float16).view(np.uint8)
    table = FrozenTable(GGUFWeight("Q6_K", blocks, (256, 300), dtype))
    np.testing.assert_array_equal(table.dequantize(), gguf.quants.Q6_K.dequantize_blocks(blocks).astype(dtype))
    assert_table_ops_equal_the_plain_references(table, rng, dtype, width=256)


def test_table_logits_bands_and_errors(rng, monkeypatch):
    table = _tables(rng)[0]
    monkeypatch.setattr("lora_np.quant.table.TILE_FLOATS", 64 * 7)  # 7 rows per band: a ragged last band
    x = ln.Tensor(rng.standard_normal((5, 64)).astype(np.float32), requires_grad=True)
    z = table_logits(x, table)
    e = table.dequantize()
    np.testing.assert_allclose(z.data, x.data @ e.T, rtol=1e-5, atol=1e-5)
    z.backward(np.ones_like(z.data))
    np.testing.assert_allclose(x.grad, np.ones((5, 300), np.float32) @ e, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="table's width"):
        table_logits(ln.Tensor(np.zeros((2, 63), np.float32)), table)
    with pytest.raises(TypeError, match="Bf16Weight or GGUFWeight"):
        FrozenTable(np.zeros((3, 4)))


@pytest.mark.parametrize("tied", [True, False])
def test_bf16_model_keeps_its_tables_frozen_and_computes_the_float32_model(tmp_path, rng, tied):
    tiny_hf_llama(tmp_path, "qwen3", dtype=torch.bfloat16, tie_word_embeddings=tied, **WIDE)
    ours, ref = ln.load_model(tmp_path, quantize="bf16"), ln.load_model(tmp_path)
    tables = [ours.model.embed_tokens.weight] + ([] if tied else [ours.lm_head.weight])
    assert all(isinstance(t, FrozenTable) and t.store.codes.dtype == np.uint16 for t in tables)
    assert (ours.head_weight is ours.model.embed_tokens.weight) == tied
    assert np.array_equal(ours.model.embed_tokens.weight.dequantize(), ref.model.embed_tokens.weight.data)
    idx = rng.integers(0, 300, size=(2, 9))
    with ln.no_grad():
        np.testing.assert_allclose(ours(idx)[0].data, ref(idx)[0].data, rtol=1e-4, atol=1e-5)
    assert np.array_equal(ours.generate(idx[:1, :4], 5, temperature=0), ref.generate(idx[:1, :4], 5, temperature=0))
    assert_same_lora_step(ours, ref, idx)
    trainable, total = ln.count_parameters(ours)
    assert (trainable, total) == ln.count_parameters(ref)
    ln.dequantize_model(ours)
    assert ours.model.embed_tokens.weight.shape == (300, 64) and not ln.is_quantized(ours)


@pytest.mark.parametrize("tied", [True, False])
def test_nf4_load_of_a_bf16_file_keeps_its_tables_as_words(tmp_path, rng, tied):
    """QLoRA from a bf16 folder (as the hub ships models): the Linear weights become NF4 codes and the
    embedding / LM head stay the file's bf16 words (half of float32, the bulk of a 1.5B model's memory
    under NF4), and the LoRA step computes what the same NF4 model with float32 tables of those values
    computes; a float32 file's tables stay float Parameters."""
    tiny_hf_llama(tmp_path, "qwen2", dtype=torch.bfloat16, tie_word_embeddings=tied, **WIDE)
    ours = ln.load_model(tmp_path, quantize="nf4", block_size=32)
    ref = ln.quantize_model(ln.load_model(tmp_path), "nf4", 32)
    tables = [ours.model.embed_tokens.weight] + ([] if tied else [ours.lm_head.weight])
    assert all(isinstance(t, FrozenTable) and t.store.codes.dtype == np.uint16 for t in tables)
    assert np.array_equal(ours.model.embed_tokens.weight.dequantize(), ref.model.embed_tokens.weight.data)
    idx = rng.integers(0, 300, size=(2, 9))
    assert_same_lora_step(ours, ref, idx)
    tiny_hf_llama(tmp_path / "f32", "qwen2", tie_word_embeddings=tied, **WIDE)
    f32 = ln.load_model(tmp_path / "f32", quantize="nf4", block_size=32)
    assert isinstance(f32.model.embed_tokens.weight, ln.Parameter)


def test_gguf_model_keeps_its_table_in_blocks(tmp_path, rng):
    pytest.importorskip("gguf")
    from gguf_files import write_tiny_gguf
    hf = tiny_hf_llama(tmp_path / "hf", "llama", **WIDE)
    path = write_tiny_gguf(tmp_path / "m.gguf", hf, "Q8_0")
    ours, plain = ln.load_model(path, quantize="gguf"), ln.load_model(path)
    table = ours.model.embed_tokens.weight
    assert isinstance(table, FrozenTable) and table.store.scheme == "gguf:q8_0"
    assert np.array_equal(table.dequantize(), plain.model.embed_tokens.weight.data)
    idx = rng.integers(0, 300, size=(2, 9))
    for model in (ours, plain):
        ln.add_lora(model.train(), ln.LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS))
    losses = [model(idx, np.roll(idx, -1, axis=1))[1].item() for model in (ours, plain)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)


def test_checkpointed_recomputation_keeps_its_decoded_weights(monkeypatch, rng):
    """Under gradient checkpointing the recomputed forward keeps its decoded bands for dL/dX: no band
    of input columns is decoded in the backward, and the gradients are the same bits as without."""
    config = ln.models.llama.LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    idx = rng.integers(0, 300, size=(2, 9))
    calls = []
    band = Bf16Weight.band
    monkeypatch.setattr(Bf16Weight, "band",  # records c1: not None for a band of columns
                        lambda self, *a, **k: calls.append((a + (0, None))[3]) or band(self, *a, **k))
    grads = []
    for checkpointing in (False, True):
        ln.manual_seed(0)
        model = ln.quantize_model(ln.models.llama.Llama(config), "bf16").train()
        ln.add_lora(model, ln.LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights="gaussian"))
        (model.gradient_checkpointing_enable if checkpointing else model.gradient_checkpointing_disable)()
        calls.clear()
        model(idx, np.roll(idx, -1, axis=1))[1].backward()
        column_bands = sum(c1 is not None for c1 in calls)  # band(r0, r1, c0, c1): dL/dX decoding Q again
        assert (column_bands == 0) == checkpointing, column_bands
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    for name, g in grads[0].items():
        np.testing.assert_array_equal(grads[1][name], g, err_msg=name)


def test_fused_head_never_widens_the_whole_table(rng):
    """A few rows (a small batch) would make the logits tile's vocabulary block the whole table; for a
    frozen table the widened block is bounded too (tracemalloc: well under the float32 table)."""
    import tracemalloc
    table = FrozenTable(Bf16Weight.from_float(rng.standard_normal((32, 200_000)).astype(np.float32)))
    h = ln.Tensor(rng.standard_normal((4, 32)).astype(np.float32), requires_grad=True)
    tracemalloc.start()
    try:
        ops.lm_head_loss(h, table, rng.integers(0, 200_000, size=4)).backward()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 0.75 * 200_000 * 32 * 4, peak


def test_a_recomputation_keeps_decoded_weights_within_its_budget(monkeypatch, rng):
    """``checkpointing.may_keep``: with room for the attention projections only (q, k, v, o: 48 KB of float32
    at this width), the recomputation keeps those and the MLP's weights are decoded again for dL/dX; the
    gradients are the same bits as keeping everything (the same decoded values, the same GEMMs)."""
    config = ln.models.llama.LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    idx = rng.integers(0, 300, size=(2, 9))
    decoded_again = []
    band = Bf16Weight.band
    monkeypatch.setattr(Bf16Weight, "band", lambda self, *a, **k: (  # a band of columns: dL/dX's decode
        len(a) == 4 and a[3] is not None and decoded_again.append(self.shape)) or band(self, *a, **k))
    grads = []
    for keep_bytes in (1 << 30, 4 * (64 * 64 * 2 + 64 * 32 * 2)):
        monkeypatch.setattr("lora_np.nn.checkpointing.KEEP_BYTES", keep_bytes)
        ln.manual_seed(0)
        model = ln.quantize_model(ln.models.llama.Llama(config), "bf16").train()
        ln.add_lora(model, ln.LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights="gaussian"))
        model.gradient_checkpointing_enable()
        decoded_again.clear()
        model(idx, np.roll(idx, -1, axis=1))[1].backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    assert set(decoded_again) == {(64, 96), (96, 64)}  # gate / up and down, in both layers
    for name, g in grads[0].items():
        np.testing.assert_array_equal(grads[1][name], g, err_msg=name)
