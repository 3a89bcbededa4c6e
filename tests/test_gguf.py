"""GGUF in: ``load_model("x.gguf")`` against transformers' GGUF loader, tensor types, bad files.

Oracle: transformers' ``from_pretrained(dir, gguf_file=...)`` (its own name map, its own reverse
q/k permutation, the gguf package's dequantization) on tiny random files written as llama.cpp writes
them (tests/gguf_files.py): the same dequantized weights and the same logits. The K-quants, which the
gguf package decodes but cannot write, come from the real Gemma 3 file's blocks.
"""

import sys

import numpy as np
import pytest

import lora_np as ln
from lora_np.io.gguf_read import open_gguf
from lora_np.quant.gguf_weight import GGUFWeight, require_gguf

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from gguf_files import write_tiny_gguf  # noqa: E402
from real_models import gemma3_gguf  # noqa: E402
from llama_oracle import tiny_hf_llama  # noqa: E402

TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1")
SIZES = dict(hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2, head_dim=16)


@pytest.fixture(scope="module")
def hf_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    # transformers' GGUF config map has no qwen3.attention.key_length, so it assumes Qwen3's default head_dim 128
    return {kind: tiny_hf_llama(root / kind, kind, **{**SIZES, "head_dim": 128 if kind == "qwen3" else 16})
            for kind in ("llama", "qwen2", "qwen3")}


def transformers_gguf(path):
    return transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)


def our_logits(model, ids):
    with ln.no_grad():
        return ln.to_numpy(model(ids)[0].data)


IDS = np.array([[3, 17, 42, 5, 88, 0, 61, 9], [1, 2, 3, 4, 5, 6, 7, 8]])


@pytest.mark.parametrize("kind,type_name", [("llama", t) for t in TYPES] + [("qwen2", "Q8_0"), ("qwen3", "Q4_1")])
def test_weights_and_logits_equal_transformers(tmp_path, hf_models, kind, type_name):
    path = write_tiny_gguf(tmp_path / f"{kind}.gguf", hf_models[kind], type_name)
    ours, theirs = ln.load_model(path), transformers_gguf(path)
    sd = {k: v.numpy() for k, v in theirs.state_dict().items()}
    for name, p in ours.named_parameters():
        w = ln.to_numpy(p.data)
        np.testing.assert_array_equal(w.T if name.endswith("_proj.weight") else w, sd[name], err_msg=name)
    with torch.no_grad():
        ref = theirs(torch.tensor(IDS)).logits.numpy()
    np.testing.assert_allclose(our_logits(ours, IDS), ref, rtol=1e-4, atol=1e-4)


def test_untied_head_and_folder(tmp_path, hf_models):
    """A file with output.weight (untied head), found as the one .gguf of a folder."""
    hf = tiny_hf_llama(tmp_path / "hf", "llama", tie_word_embeddings=False, **SIZES)
    (tmp_path / "dir").mkdir()
    path = write_tiny_gguf(tmp_path / "dir" / "m.gguf", hf, "Q8_0")
    ours = ln.load_model(tmp_path / "dir")
    assert not ours.config.tie_word_embeddings
    with torch.no_grad():
        ref = transformers_gguf(path)(torch.tensor(IDS)).logits.numpy()
    np.testing.assert_allclose(our_logits(ours, IDS), ref, rtol=1e-4, atol=1e-4)


def test_gguf_quantized_base_computes_the_dequantized_model(tmp_path, hf_models):
    """quantize="gguf": the Linear weights stay in their Q4_1 blocks, and the model computes what the
    float model of the same dequantized weights computes (float64, tile by tile)."""
    path = write_tiny_gguf(tmp_path / "m.gguf", hf_models["llama"], "Q4_1")
    base = ln.load_model(path, dtype=np.float64, quantize="gguf")
    plain = ln.load_model(path, dtype=np.float64)
    q = base.model.layers[0].self_attn.q_proj
    assert isinstance(q.weight, GGUFWeight) and q.weight.scheme == "gguf:q4_1"
    assert q.weight.codes.nbytes == 64 * 64 // 32 * 20
    np.testing.assert_allclose(our_logits(base, IDS), our_logits(plain, IDS), rtol=1e-12, atol=1e-12)


K_TENSORS = ("blk.0.attn_output.weight", "blk.0.ffn_down.weight", "blk.0.attn_v.weight", "blk.0.ffn_up.weight")


@pytest.fixture(scope="module")
def gemma_reader():
    return gguf.GGUFReader(gemma3_gguf())  # skips, naming the install command, where it is absent


@pytest.mark.parametrize("tensor_name", K_TENSORS)
def test_k_quant_blocks_decode_tile_by_tile(gemma_reader, tensor_name):
    """Q4_K, Q6_K, Q8_0, Q5_0 blocks of the real Gemma 3 file: every tile the matmul asks for equals the
    same part of gguf.quants.dequantize of the whole tensor (what transformers loads), and the
    tiled matmul (both directions) equals the float64 product with it."""
    t = next(t for t in gemma_reader.tensors if t.name == tensor_name)
    full = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type)  # (out, in)
    w = GGUFWeight(t.tensor_type.name, np.asarray(t.data), full.shape[::-1], np.float64)
    bs = w.block_size
    np.testing.assert_array_equal(w.band(3, 7, bs, 3 * bs), full[3:7, bs:3 * bs])
    np.testing.assert_array_equal(w.dequantize(), full.T)
    rng = np.random.default_rng(0)
    x = ln.Tensor(rng.standard_normal((5, full.shape[1])), requires_grad=True)
    y = ln.quant.quant_linear(x, w)
    g = rng.standard_normal(y.shape)
    y.backward(g)
    np.testing.assert_allclose(y.data, x.data @ full.T.astype(np.float64), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(x.grad, g @ full.astype(np.float64), rtol=1e-10, atol=1e-10)


def test_merge_requantizes_or_refuses(gemma_reader):
    """Writing a new W into a Q8_0 weight requantizes it (what llama.cpp's quantizer gives);
    into a K-quant it cannot, and says what to do."""
    t = next(t for t in gemma_reader.tensors if t.name == "blk.0.attn_v.weight")  # Q8_0
    w = GGUFWeight("Q8_0", np.asarray(t.data), (640, 256))
    new = w.dequantize() * 0.5
    w.data = new
    np.testing.assert_array_equal(w.dequantize(), gguf.quants.dequantize(
        gguf.quants.quantize(np.ascontiguousarray(new.T), gguf.GGMLQuantizationType.Q8_0),
        gguf.GGMLQuantizationType.Q8_0).T)
    k = next(t for t in gemma_reader.tensors if t.name == "blk.0.attn_output.weight")
    kw = GGUFWeight("Q4_K", np.asarray(k.data), (1024, 640))
    with pytest.raises(ValueError, match="cannot quantize to Q4_K.*dequantize_model"):
        kw.data = kw.dequantize()


# ---- bad input: one clear error naming the file ----

def test_not_a_gguf(tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_text("this is not a GGUF file\n")
    with pytest.raises(ValueError, match=r"model\.gguf: not a readable GGUF file"):
        ln.load_model(bad)


def test_truncated(tmp_path, hf_models):
    path = write_tiny_gguf(tmp_path / "m.gguf", hf_models["llama"], "Q8_0")
    data = path.read_bytes()
    for cut in (len(data) // 2, 100):
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match=r"m\.gguf: not a readable GGUF file.*truncated"):
            ln.load_model(path)


def test_unknown_quant_type(tmp_path, hf_models):
    """A tensor type id the gguf package does not know (patched into the tensor info), and one that it
    knows but lora_np does not read (IQ4_NL, patched the same way): each named with the file."""
    path = write_tiny_gguf(tmp_path / "m.gguf", hf_models["llama"], "Q8_0")
    data = bytearray(path.read_bytes())
    name = b"blk.0.attn_q.weight"
    at = data.index(name) + len(name) + 4 + 8 * 2  # name, n_dims (u32), 2 dims (u64): then the type (u32)
    assert int.from_bytes(data[at:at + 4], "little") == int(gguf.GGMLQuantizationType.Q8_0)
    data[at:at + 4] = (99).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"m\.gguf: not a readable GGUF file.*99"):
        ln.load_model(path)
    data[at:at + 4] = int(gguf.GGMLQuantizationType.IQ4_NL).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"m\.gguf.*blk\.0\.attn_q\.weight.*IQ4_NL is not supported"):
        ln.load_model(path)


def test_unsupported_architecture(tmp_path, hf_models):
    import gguf as g
    path = tmp_path / "mamba.gguf"
    w = g.GGUFWriter(str(path), "mamba")
    w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ValueError, match=r"mamba\.gguf: GGUF architecture 'mamba' is not supported"):
        ln.load_model(path)


def test_unknown_tensor_and_missing_file(tmp_path, hf_models):
    hf = hf_models["llama"]
    path = write_tiny_gguf(tmp_path / "m.gguf", hf, "F32", drop=("model.layers.1.mlp.up_proj.weight",))
    with pytest.raises(ValueError, match=r"m\.gguf: config.json disagrees with the weights: missing"):
        ln.load_model(path)
    with pytest.raises(FileNotFoundError, match="GGUF file not found"):
        ln.load_model(tmp_path / "absent.gguf")


def test_folder_with_two_gguf_files(tmp_path, hf_models):
    for n in ("a", "b"):
        write_tiny_gguf(tmp_path / f"{n}.gguf", hf_models["qwen2"], "F32")
    with pytest.raises(ValueError, match="holds 2 GGUF files"):
        ln.load_model(tmp_path)


def test_missing_gguf_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "gguf", None)
    with pytest.raises(ImportError, match="pip install gguf"):
        require_gguf()


def test_open_gguf_gives_what_a_folder_gives(tmp_path, hf_models):
    """The reader's config dict holds what transformers' config.json of the same model holds."""
    hf = hf_models["qwen3"]
    cfg, stored = open_gguf(write_tiny_gguf(tmp_path / "m.gguf", hf, "F16"))
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "vocab_size", "max_position_embeddings"):
        assert cfg[key] == getattr(hf.config, key), key
    assert cfg["rope_theta"] == hf.config.rope_parameters["rope_theta"]
    q = hf.model.layers[0].self_attn.q_proj.weight
    assert stored["model.layers.0.self_attn.q_proj.weight"].shape == tuple(q.shape)
