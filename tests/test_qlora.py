"""QLoRA end to end: an NF4 GPT-2 loaded tensor by tensor equals transformers + bitsandbytes, LoRA
trains on top of it, its adapter file is an ordinary PEFT adapter, merging requantizes as PEFT
does, and the float weights are never held."""

import tracemalloc

import numpy as np
import pytest
import torch
from transformers import GPT2LMHeadModel

import lora_np as ln
from lora_np import to_numpy
from lora_np.optim import AdamW
from lora_np.quant import QuantLinear, QuantWeight, nf4_quantize
from hf_oracle import bnb_nf4, tiny_hf_gpt2

pytest.importorskip("bitsandbytes")
SIZES = dict(vocab_size=96, n_positions=32, n_embd=128, n_head=4, n_layer=2)
LINEARS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("gpt2")
    tiny_hf_gpt2(path, dtype=torch.float32, **SIZES)
    return path


def _ids(rng, batch=2, length=24):
    return rng.integers(0, SIZES["vocab_size"], size=(batch, length))


def test_nf4_logits_equal_transformers_bitsandbytes(checkpoint, rng):
    import bitsandbytes.functional as F
    theirs = bnb_nf4(GPT2LMHeadModel, checkpoint)
    ours = ln.load_gpt2(checkpoint, quantize="nf4")
    idx = _ids(rng)
    with torch.no_grad():
        ref = theirs(torch.from_numpy(idx)).logits.numpy()
    assert np.abs(to_numpy(ours(idx)[0]) - ref).max() < 1e-4
    layer = theirs.transformer.h[1].mlp.c_fc.weight  # Conv1D quantized in (out, in) order: W transposed
    ours_fc = ours.transformer.h[1].mlp.c_fc.weight
    assert np.array_equal(to_numpy(ours_fc.codes).reshape(-1), layer.data.numpy().reshape(-1))
    np.testing.assert_allclose(to_numpy(ours_fc.dequantize()).T,
                               F.dequantize_4bit(layer.data, layer.quant_state).numpy(),
                               rtol=1e-6, atol=1e-9)  # the double-quant offset: torch's float32 mean, ±1 ulp


def test_quantized_model_holds_codes_not_float_weights(checkpoint):
    for scheme, itemsize in (("nf4", 0.5), ("int8", 1)):
        model = ln.load_gpt2(checkpoint, quantize=scheme, double_quant=scheme == "nf4")
        assert ln.is_quantized(model) and not model.training
        names = {n for n, _ in model.named_parameters()}
        for i in range(SIZES["n_layer"]):
            for linear in LINEARS:
                module = dict(model.named_modules())[f"transformer.h.{i}.{linear}"]
                assert isinstance(module, QuantLinear) and isinstance(module.weight, QuantWeight)
                assert f"transformer.h.{i}.{linear}.weight" not in names
                assert f"transformer.h.{i}.{linear}.bias" in names
                assert module.weight.codes.nbytes == module.in_features * module.out_features * itemsize
        assert model.transformer.wte.weight.dtype == np.float32  # embeddings and norms stay float


def test_quantized_load_peak_memory_is_a_fraction_of_float(checkpoint):
    """tracemalloc counts NumPy's buffers: the NF4 model holds a fraction of the float model's bytes,
    and its tensor-by-tensor load peaks below what the float model alone holds (it never exists)."""
    held, peak = {}, {}
    for quantize in (None, "nf4"):
        tracemalloc.start()
        model = ln.load_gpt2(checkpoint, quantize=quantize)
        held[quantize], peak[quantize] = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        del model
    assert held["nf4"] < 0.25 * held[None]
    assert peak["nf4"] < held[None]


def test_qlora_trains_disables_and_saves_a_peft_adapter(checkpoint, tmp_path, rng):
    from peft import PeftModel
    from transformers import GPT2LMHeadModel
    model = ln.load_gpt2(checkpoint, quantize="nf4").train()
    ln.add_lora(model, ln.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "c_fc"]))
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert all(".lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    opt = AdamW(trainable, lr=1e-2)
    idx = _ids(rng, 8, 24)
    idx[:, 1::2] = (idx[:, 0::2] + 1) % SIZES["vocab_size"]  # a pattern to learn
    with ln.no_grad():
        base_logits, first = model(idx[:, :-1], idx[:, 1:])
    for _ in range(25):
        _, loss = model(idx[:, :-1], idx[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert loss.item() < 0.8 * first.item()
    with ln.disable_lora(model), ln.no_grad():
        assert np.array_equal(to_numpy(model(idx[:, :-1])[0]), to_numpy(base_logits))
    ln.save_adapter(model, tmp_path / "adapter")
    # the file is an ordinary adapter: PEFT puts it on the float base, and so does lora_np
    peft = PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained(checkpoint, dtype=torch.float32),
                                     tmp_path / "adapter").eval()
    float_ours = ln.load_adapter(ln.load_gpt2(checkpoint), tmp_path / "adapter")
    with torch.no_grad():
        ref = peft(torch.from_numpy(idx)).logits.numpy()
    assert np.abs(to_numpy(float_ours(idx)[0]) - ref).max() < 1e-4


def _random_adapter_on_nf4(checkpoint):
    """NF4 base (no double quantization) with a non-zero adapter on c_attn, the same for the same seed."""
    ln.manual_seed(7)
    model = ln.load_gpt2(checkpoint, quantize="nf4", double_quant=False)
    return ln.add_lora(model, ln.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], init_lora_weights=False))


def test_merge_into_4bit_base_requantizes_like_peft(checkpoint, rng):
    import bitsandbytes.functional as F
    model = _random_adapter_on_nf4(checkpoint)
    layer = model.transformer.h[0].attn.c_attn
    adapted = to_numpy(layer.weight.dequantize()) + to_numpy(layer.delta_weight("default"))
    idx = _ids(rng)
    with ln.no_grad():
        unmerged = to_numpy(model(idx)[0])
    ln.merge_lora(model)  # PEFT's Linear4bit.merge: W' = deq(Q) + ΔW, quantized again
    ref, _ = F.quantize_4bit(torch.from_numpy(adapted.T.copy()), blocksize=64, quant_type="nf4")
    assert np.array_equal(to_numpy(layer.weight.codes).reshape(-1), ref.numpy().reshape(-1))
    with ln.no_grad():
        merged = to_numpy(model(idx)[0])
    assert 1e-4 < np.abs(merged - unmerged).max() < 0.5 * np.abs(unmerged).max()  # the requantization rounding
    # exact alternative: dequantize the base, then merge in float
    plain = ln.merge_and_unload(ln.dequantize_model(_random_adapter_on_nf4(checkpoint)))
    assert not ln.is_quantized(plain)
    with ln.no_grad():
        np.testing.assert_allclose(to_numpy(plain(idx)[0]), unmerged, atol=1e-5)


def test_dequantize_then_save_loads_in_transformers(checkpoint, tmp_path, rng):
    from transformers import GPT2LMHeadModel
    model = ln.load_gpt2(checkpoint, quantize="nf4")
    with pytest.raises(ValueError, match="quantized.*dequantize_model"):
        ln.save_gpt2(model, tmp_path / "q")
    ln.save_gpt2(ln.dequantize_model(model), tmp_path / "deq")
    hf = GPT2LMHeadModel.from_pretrained(tmp_path / "deq", dtype=torch.float32).eval()
    idx = _ids(rng)
    with torch.no_grad():
        assert np.abs(hf(torch.from_numpy(idx)).logits.numpy() - to_numpy(model(idx)[0])).max() < 1e-4


def test_bad_inputs(checkpoint, tmp_path):
    with pytest.raises(ValueError, match="unknown quantization 'fp4'.*'nf4'.*'int8'"):
        ln.load_gpt2(checkpoint, quantize="fp4")
    with pytest.raises(ValueError, match="block_size=96 does not divide the 128 values of the rows of "
                                         "transformer.h.0.attn.c_attn.weightᵀ"):
        ln.load_gpt2(checkpoint, quantize="nf4", block_size=96)
    with pytest.raises(ValueError, match="block_size must be a positive integer; got 0"):
        ln.load_gpt2(checkpoint, quantize="int8", block_size=0)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((checkpoint / "config.json").read_text())
    data = (checkpoint / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[:len(data) - 1000])
    with pytest.raises(ValueError, match="truncated|outside"):
        ln.load_gpt2(broken, quantize="nf4")
    model = ln.load_gpt2(checkpoint, quantize="nf4")
    with pytest.raises(ValueError, match="corrupt quantized data: packed NF4 codes"):
        QuantWeight("nf4", to_numpy(model.transformer.h[0].mlp.c_fc.weight.codes)[:-1], np.ones(1024, np.float32),
                    (128, 512))
    packed, _ = nf4_quantize(np.ones((128, 512), np.float32))
    with pytest.raises(ValueError, match="corrupt quantized data: absmax holds 3"):
        QuantWeight("nf4", packed, np.ones(3, np.float32), (128, 512))


def test_parameter_count_includes_the_quantized_base(checkpoint):
    float_model, model = ln.load_gpt2(checkpoint), ln.load_gpt2(checkpoint, quantize="nf4")
    config = ln.LoraConfig(r=4, target_modules=["c_attn"])
    assert ln.count_parameters(ln.add_lora(model, config)) == ln.count_parameters(ln.add_lora(float_model, config))


def test_quantize_model_after_add_lora_quantizes_the_adapted_bases(rng):
    """quant knows nothing of lora: it finds the float W a LoraLinear holds by what it holds. The
    adapted layer then runs quant_lora_linear, equal to the float LoRA op on deq(Q)."""
    model = ln.GPT(ln.GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=64))
    ln.add_lora(model, ln.LoraConfig(r=2, target_modules=["c_attn"], init_lora_weights=False))
    idx = rng.integers(0, 20, size=(2, 8))
    ln.quantize_model(model, "nf4")
    assert isinstance(model.transformer.h[0].attn.c_attn.weight, QuantWeight)
    assert isinstance(model.transformer.h[0].attn.c_proj, QuantLinear)
    quantized = to_numpy(model(idx)[0])
    ln.dequantize_model(model)  # float W = deq(Q): the same function through ops.lora_linear
    np.testing.assert_allclose(quantized, to_numpy(model(idx)[0]), rtol=1e-5, atol=1e-5)
    ln.merge_lora(model)
    with pytest.raises(ValueError, match="merged into the weights; call unmerge_lora"):
        ln.quantize_model(model, "nf4")
