"""Gemma 3 to GGUF: ``save_gguf`` read back by transformers' GGUF loader, the llama.cpp LoRA adapter file,
what a gemma3 GGUF file cannot hold refused, and the real 270M's hyper-parameters written back as
llama.cpp's converter wrote them.

Oracles: transformers' ``from_pretrained(dir, gguf_file=...)`` (its Gemma2TensorProcessor subtracts the
1 stored on every norm weight; its defaults supply the 5:1 layer pattern, the local RoPE base 10,000 and
query_pre_attn_scalar 256, which is why the tiny model here has head_dim 256); transformers' tokenizer
of the folder against transformers' tokenizer of the written file; for the adapter file, the adapted
model computed from its tensors as llama.cpp computes it (W + alpha/r · BA, r = lora_a's rows).
"""

import numpy as np
import pytest

import lora_np as ln
from lora_np.io.gguf_names import hf_name
from lora_np.io.gguf_read import hf_config, open_reader
from lora_np.io.gguf_write import _add_hparams, save_gguf, save_lora_gguf
from lora_np.models.gemma3_spec import config_from_hf, config_to_hf
from real_models import gemma3_gguf

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from gemma3_oracle import tiny_gemma_tokenizer, tiny_hf_gemma3  # noqa: E402

TEXTS = ["the cat sat on the mat. Grouped-query attention shares keys and values."] * 20
# what llama.cpp fixes for gemma3 (gguf_names.py): 5:1 layers, local base 10,000, scores by 1/sqrt(head_dim)
LLAMA_CPP_SHAPE = dict(num_hidden_layers=6, layer_types=None, head_dim=256, query_pre_attn_scalar=256,
                       num_attention_heads=2, num_key_value_heads=1, sliding_window=4,
                       rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                                        "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}})
IDS = np.array([[2, 17, 42, 5, 88, 0, 61, 9, 100, 33]])  # longer than the window (4)


def logits(model, ids=IDS):
    with ln.no_grad():
        return ln.to_numpy(model(ids)[0].data)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gemma3") / "base"
    vocab = tiny_gemma_tokenizer(folder, TEXTS)
    tiny_hf_gemma3(folder, vocab_size=vocab, **LLAMA_CPP_SHAPE)
    return folder


@pytest.mark.parametrize("outtype,tol", [("f32", 1e-5), ("q8_0", 6e-2)])
def test_gemma3_file_reads_back_in_transformers(base, tmp_path, outtype, tol):
    model = ln.load_model(base)
    out = save_gguf(model, tmp_path / "model.gguf", outtype, tokenizer_from=base)
    theirs_model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=out.name,
                                                                     dtype=torch.float32).eval()
    assert theirs_model.config.layer_types == model.config.layer_types
    with torch.no_grad():
        theirs = theirs_model(torch.tensor(IDS)).logits.numpy()
    np.testing.assert_allclose(theirs, logits(model), atol=tol * np.abs(theirs).max())
    np.testing.assert_allclose(logits(ln.load_model(out)), theirs, rtol=1e-4, atol=1e-4)
    r = gguf.GGUFReader(out)
    meta = {k: r.fields[k].contents() for k in r.fields if k.startswith("gemma3.")}
    assert meta["gemma3.attention.sliding_window"] == 4 and meta["gemma3.attention.key_length"] == 256
    assert meta["gemma3.attention.value_length"] == 256 and meta["gemma3.rope.freq_base"] == 1e6
    norm = next(t for t in r.tensors if t.name == "blk.0.post_ffw_norm.weight")
    w = ln.to_numpy(dict(model.named_parameters())["model.layers.0.post_feedforward_layernorm.weight"].data)
    np.testing.assert_allclose(np.asarray(norm.data), 1.0 + w, rtol=1e-7)  # stored as 1 + w
    assert "output.weight" not in {t.name for t in r.tensors}  # the tied head: llama.cpp reuses token_embd
    file_tok = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file=out.name)
    folder_tok = transformers.AutoTokenizer.from_pretrained(base)
    for text in ("the cat sat", "Grouped attention: é 日本 🙂", "  two  spaces\nnew line"):
        assert file_tok(text).input_ids == folder_tok(text).input_ids, text


def test_gemma3_lora_adapter_file_as_llama_cpp_reads_it(base, tmp_path):
    """adapter.gguf: W + alpha/r·BA on the base file's matrices (no q/k permutation for gemma3) gives our
    adapted model's logits; a rsLoRA alpha is written as scaling·r."""
    model = ln.load_model(base)
    ln.add_lora(model, ln.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", use_rslora=True,
                                     init_lora_weights=False))
    adapter = save_lora_gguf(model, tmp_path / "adapter.gguf")
    base_file = save_gguf(ln.load_model(base), tmp_path / "base.gguf", "f32")
    r = gguf.GGUFReader(adapter)
    assert r.fields["general.architecture"].contents() == "gemma3"
    alpha = r.fields["adapter.lora.alpha"].contents()
    assert alpha == pytest.approx(8 / np.sqrt(4) * 4)
    lora = {t.name: np.array(t.data) for t in r.tensors}
    assert len(lora) == 2 * 7 * 6 and "blk.5.ffn_down.weight.lora_a" in lora
    applied = ln.load_model(base_file)
    params = dict(applied.named_parameters())
    for t in gguf.GGUFReader(base_file).tensors:
        if t.name + ".lora_a" in lora:
            a, b = lora[t.name + ".lora_a"], lora[t.name + ".lora_b"]
            params[hf_name(t.name, "gemma3")].data[...] = (np.asarray(t.data) + alpha / a.shape[0] * (b @ a)).T
    np.testing.assert_allclose(logits(applied), logits(model), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("change,message", [
    (dict(layer_types=["full_attention"] * 6), "layer_types"),
    (dict(rope_local_base_freq=100.0), "rope_local_base_freq=100.0"),
    (dict(query_pre_attn_scalar=20), "query_pre_attn_scalar=20 with head_dim=256"),
])
def test_what_a_gemma3_file_cannot_hold_is_refused(base, tmp_path, change, message):
    model = ln.load_model(base)
    for key, value in change.items():
        setattr(model.config, key, value)
    with pytest.raises(ValueError, match="save_gguf: a GGUF file cannot hold") as err:
        save_gguf(model, tmp_path / "x.gguf")
    assert message in str(err.value) and not (tmp_path / "x.gguf").exists()


def test_embedding_and_dora_adapters_have_no_llama_cpp_form(base, tmp_path):
    for config in (ln.LoraConfig(r=2, target_modules=["embed_tokens", "q_proj"]),
                   ln.LoraConfig(r=2, target_modules=["q_proj"], use_dora=True)):
        model = ln.add_lora(ln.load_model(base), config)
        with pytest.raises(ValueError, match="no llama.cpp LoRA form"):
            save_lora_gguf(model, tmp_path / "a.gguf")


def test_hyperparameters_of_the_real_270m_as_llama_cpps_converter_wrote_them(tmp_path):
    """The real Gemma 3 270M file (written by llama.cpp's convert_hf_to_gguf.py): the config lora_np reads
    from it, written back, gives every gemma3.* key and value the converter wrote (no weights decoded)."""
    real = gemma3_gguf()
    reader = open_reader(real)  # lora_np's cached reader: the 262k-token vocabulary is parsed once per session
    writer = gguf.GGUFWriter(tmp_path / "meta.gguf", "gemma3")
    _add_hparams(writer, gguf, config_to_hf(config_from_hf(hf_config(reader, real)), np.float32), "gemma3")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    ours, theirs = gguf.GGUFReader(tmp_path / "meta.gguf").fields, reader.fields
    expected = {k: f.contents() for k, f in theirs.items() if k.startswith("gemma3.")}
    assert {k: ours[k].contents() for k in expected} == expected
    assert set(k for k in ours if k.startswith("gemma3.")) - set(expected) == {"gemma3.vocab_size",
                                                                                 "gemma3.rope.dimension_count"}
