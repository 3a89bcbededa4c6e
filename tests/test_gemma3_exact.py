"""Gemma 3, exact against transformers: random-weight Gemma3ForCausalLM folders written by transformers
(local and global layers, a sliding window shorter than the sequence) give, in float64, the same
logits, loss and EVERY parameter gradient as transformers to 1e-10 relative; greedy generation with
the KV cache gives the same tokens past the window; bf16, sharded and older-style configs load;
``save_model`` writes a folder ``from_pretrained`` loads; bad configs are one line naming config.json.

Oracle: transformers (float64, SDPA attention), with its (1 + w) RMSNorm and rotary tables kept in
float64 (``gemma3_oracle.float64_gemma3``; transformers computes both in float32 whatever the dtype).
Token ids start at 1: transformers' embedding has padding_idx = pad_token_id (0 in Gemma's configs),
whose row gets no gradient from the lookup; lora_np's embedding has no padding row (the test
folders set pad_token_id to None, so transformers' has none either, and id 0 would do too).
"""

import json

import numpy as np
import pytest
import torch

import lora_np as ln
from lora_np import to_numpy
from lora_np.ops.attention import memory_efficient_attention
from lora_np.models import FAMILIES, KVCache, family_for_type, family_of
from gemma3_oracle import SIZES, float64_gemma3, load_hf, tiny_hf_gemma3
from hf_oracle import assert_equals_transformers, max_rel_err
from transformers4_logits import TRANSFORMERS4, transformers4_logits

TOL = 1e-10
T = 20  # > the window (6): local layers see only their last 6 keys
LINEAR = {"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 10000.0},
          "sliding_attention": {"rope_type": "default", "rope_theta": 100.0}}
VARIANTS = {
    "tied": {},
    "untied-linear-bias-softcap": dict(tie_word_embeddings=False, rope_parameters=LINEAR, attention_bias=True,
                                       final_logit_softcapping=3.0),
    "mqa-pattern": dict(num_key_value_heads=1, num_hidden_layers=4, layer_types=None, sliding_window_pattern=2,
                        query_pre_attn_scalar=12),
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    out = {}
    for name, spec in VARIANTS.items():
        path = tmp_path_factory.mktemp(name)
        tiny_hf_gemma3(path, **spec)
        out[name] = path
    return out


def _ids(rng, batch=2, length=T):
    return rng.integers(1, SIZES["vocab_size"], size=(batch, length))


@pytest.mark.parametrize("kernels", ["plain", "memory-efficient"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_logits_loss_and_every_gradient_equal_transformers(variant, kernels, folders, rng):
    path = folders[variant]
    ours = ln.load_model(path, dtype=np.float64)
    assert isinstance(ours, ln.Gemma3) and "sliding_attention" in ours.config.layer_types
    with float64_gemma3(), memory_efficient_attention(kernels == "memory-efficient"):  # the window in both
        assert_equals_transformers(ours, load_hf(path), _ids(rng), _ids(rng), TOL)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_greedy_generation_with_the_cache_equals_transformers_past_the_window(variant, folders, rng):
    path = folders[variant]
    ours = ln.load_model(path, dtype=np.float64)
    idx = _ids(rng, batch=2, length=9)  # the prompt alone is longer than the window
    with float64_gemma3():
        ref = load_hf(path).generate(torch.tensor(idx), max_new_tokens=14, do_sample=False, pad_token_id=0).numpy()
    assert ref.shape[1] > 3 * ours.config.sliding_window
    assert np.array_equal(ours.generate(idx, 14, temperature=0), ref)


def test_the_cache_holds_at_most_the_window_on_local_layers(folders, rng):
    ours = ln.load_model(folders["tied"], dtype=np.float64)
    window = ours.config.sliding_window
    assert ours.attention_windows == {i: window for i, kind in enumerate(ours.config.layer_types)
                                      if kind == "sliding_attention"}
    cache = KVCache(40, ours.attention_windows)
    with ln.no_grad():
        ours.hidden_states(_ids(rng, 1, 15), cache=cache)
        for _ in range(5):
            ours.hidden_states(_ids(rng, 1, 1), cache=cache)
    for i, (keys, values, seen) in cache.layers.items():
        assert seen == 20
        assert keys.shape[2] == (window if i in ours.attention_windows else 40)


@pytest.mark.parametrize("how", ["bf16", "sharded"])
def test_bf16_and_sharded_folders_load(how, tmp_path, rng):
    tiny_hf_gemma3(tmp_path, dtype=torch.bfloat16 if how == "bf16" else torch.float32,
                   max_shard_size="20KB" if how == "sharded" else None)
    if how == "sharded":
        assert len(list(tmp_path.glob("model-*.safetensors"))) > 2
    ours = ln.load_model(tmp_path, dtype=np.float64)
    idx = _ids(rng)
    with float64_gemma3(), torch.no_grad():
        ref = load_hf(tmp_path)(torch.tensor(idx)).logits
    with ln.no_grad():
        assert max_rel_err(to_numpy(ours(idx)[0].data), ref) < TOL


def test_the_embedding_is_scaled_in_its_own_dtype_as_transformers(tmp_path):
    """√hidden_size is rounded to the table's dtype before the multiply: float32 rows equal transformers'
    bit for bit (lora_np's models are float32 or float64; transformers' bf16 rounds √640 to 25.25)."""
    tiny_hf_gemma3(tmp_path)
    ours, theirs = ln.load_model(tmp_path), load_hf(tmp_path, torch.float32)
    ids = np.arange(1, 9)[None]
    with ln.no_grad(), torch.no_grad():
        assert np.array_equal(to_numpy(ours.embed(ids).data), theirs.model.embed_tokens(torch.tensor(ids)).numpy())
    with ln.no_grad():
        unscaled = to_numpy(ours.model.embed_tokens(ids).data)
    assert not np.array_equal(unscaled, to_numpy(ours.embed(ids).data))


def _rewrite_config(src, dst, change):
    cfg = json.loads((src / "config.json").read_text())
    change(cfg)
    dst.mkdir(exist_ok=True)
    (dst / "config.json").write_text(json.dumps(cfg))
    (dst / "model.safetensors").write_bytes((src / "model.safetensors").read_bytes())
    return dst


def _old_style(cfg):
    """As downloaded Gemma 3 folders spell it: rope_theta, rope_local_base_freq, rope_scaling, a pattern."""
    params = cfg.pop("rope_parameters")
    cfg["rope_theta"] = params["full_attention"].pop("rope_theta")
    cfg["rope_local_base_freq"] = params["sliding_attention"]["rope_theta"]
    cfg["rope_scaling"] = params["full_attention"] if params["full_attention"]["rope_type"] != "default" else None
    types = cfg.pop("layer_types")
    cfg["sliding_window_pattern"] = types.index("full_attention") + 1


def test_old_style_config_loads_as_the_new_one(folders, tmp_path, rng):
    path = folders["untied-linear-bias-softcap"]
    old = ln.load_model(_rewrite_config(path, tmp_path / "old", _old_style), dtype=np.float64)
    new = ln.load_model(path, dtype=np.float64)
    assert old.config.layer_types[:2] == new.config.layer_types[:2] and old.config.rope_scaling["factor"] == 8.0
    idx = _ids(rng)
    with float64_gemma3(), torch.no_grad():
        ref = load_hf(tmp_path / "old")(torch.tensor(idx)).logits
    with ln.no_grad():
        assert max_rel_err(to_numpy(old(idx)[0].data), ref) < TOL


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_save_model_writes_a_folder_from_pretrained_loads(variant, folders, tmp_path, rng):
    ours = ln.load_model(folders[variant], dtype=np.float64)
    ln.save_model(ours, tmp_path / "saved")
    idx = _ids(rng)
    with float64_gemma3(), torch.no_grad():
        ref = load_hf(tmp_path / "saved")(torch.tensor(idx)).logits
    with ln.no_grad():
        assert max_rel_err(to_numpy(ours(idx)[0].data), ref) < TOL
    assert ln.load_model(tmp_path / "saved", dtype=np.float64).config == ours.config


@pytest.mark.skipif(not TRANSFORMERS4, reason="set LORA_NP_TRANSFORMERS4 to a `pip install --target` folder of "
                    "transformers 4.x (see tests/transformers4_logits.py)")
def test_save_model_writes_a_folder_transformers_4_loads(folders, tmp_path, rng):
    """transformers 4.x reads RoPE from rope_theta / rope_local_base_freq / rope_scaling, not rope_parameters."""
    ours = ln.load_model(folders["untied-linear-bias-softcap"])
    ln.save_model(ours, tmp_path / "saved")
    idx = _ids(rng)
    got = transformers4_logits(tmp_path / "saved", torch.tensor(idx), tmp_path)
    with ln.no_grad():
        assert max_rel_err(to_numpy(ours(idx)[0].data), got) < 1e-5


def test_float32_model_matches_transformers_float32(folders, rng):
    """The everyday dtype, against unpatched transformers (float32 tables and RMSNorm)."""
    ours = ln.load_model(folders["tied"])
    idx = _ids(rng)
    with torch.no_grad():
        ref = load_hf(folders["tied"], dtype=torch.float32)(torch.tensor(idx)).logits
    with ln.no_grad():
        assert max_rel_err(to_numpy(ours(idx)[0].data), ref) < 1e-5


def test_spec_counts_names_and_defaults(folders):
    family = family_for_type("gemma3_text")
    model = ln.load_model(folders["untied-linear-bias-softcap"])
    assert family in FAMILIES and family_of(model) is family and family_of(model.config) is family
    theirs = load_hf(folders["untied-linear-bias-softcap"], torch.float32)
    assert family.parameter_count(model.config) == sum(p.numel() for p in theirs.parameters())
    assert family.lora_targets == ("q_proj", "v_proj") and family.fan_in_fan_out is False
    assert family.gguf_architecture(model.config) == "gemma3"
    assert family_of(ln.Llama(ln.LlamaConfig(vocab_size=8, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                                             num_attention_heads=2, num_key_value_heads=1))).name == "llama"


def test_gemma_3_270m_shape_by_default():
    """The dataclass's defaults are Gemma 3 270M's: 18 layers, every sixth global; 268,098,176 parameters."""
    config = ln.Gemma3Config()
    assert config.layer_types.count("full_attention") == 3 and config.layer_types[5] == "full_attention"
    assert family_of(config).parameter_count(config) == 268_098_176


BAD = {
    "layer_types length": (lambda c: c.update(layer_types=c["layer_types"][:-1]), "one attention type per layer"),
    "unknown attention type": (lambda c: c["layer_types"].__setitem__(0, "chunked_attention"),
                               "unknown attention types ['chunked_attention']"),
    "window larger than the context": (lambda c: c.update(sliding_window=65), "larger than the context"),
    "attention soft-capping": (lambda c: c.update(attn_logit_softcapping=50.0), "attn_logit_softcapping"),
    "global rope type": (lambda c: c["rope_parameters"]["full_attention"].update(rope_type="yarn", factor=2.0),
                         "'yarn' is not supported"),
    "activation": (lambda c: c.update(hidden_activation="silu"), "hidden_activation 'silu'"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_configs_are_one_line_naming_config_json(case, folders, tmp_path):
    change, words = BAD[case]
    path = _rewrite_config(folders["tied"], tmp_path / "bad", change)
    with pytest.raises(ValueError) as err:
        ln.load_model(path)
    message = str(err.value)
    assert "config.json" in message and words in message and "\n" not in message, message


def test_sampling_reads_the_soft_capped_logits(folders, rng):
    """Generation soft-caps the next-token logits as the forward does: a sampled token (temperature 0.7)
    equals sample_next on the forward's capped logits with the same seed (greedy would not tell:
    cap·tanh(x/cap) keeps the order)."""
    from lora_np.models.generation import sample_next
    ours = ln.load_model(folders["untied-linear-bias-softcap"], dtype=np.float64)
    idx = _ids(rng, batch=8, length=9)
    with ln.no_grad():
        logits = ours(idx)[0].data[:, -1]
    assert np.abs(to_numpy(logits)).max() < ours.config.final_logit_softcapping
    for seed in range(3):
        ln.manual_seed(seed)
        expected = to_numpy(sample_next(logits, 0.7))
        ln.manual_seed(seed)
        assert np.array_equal(ours.generate(idx, 1, temperature=0.7)[:, -1], expected)


@pytest.mark.parametrize("type_name", ["F32", "Q8_0"])
def test_a_gemma3_gguf_file_loads_as_transformers_reads_it(type_name, tmp_path, rng):
    """llama.cpp's layout (norms as 1 + w, Gemma's norm names, the window in the metadata), read by
    lora_np's GGUF reader and by transformers' GGUF loader (the oracle): the same weights and logits.
    head_dim 256, as in the released models: the file holds no query_pre_attn_scalar, llama.cpp (and
    lora_np) scale by 1/√head_dim, transformers' loader by its default 1/√256 (gguf_names.py)."""
    pytest.importorskip("gguf")
    from transformers import AutoModelForCausalLM
    from gguf_files import write_tiny_gguf
    hf = tiny_hf_gemma3(tmp_path / "hf", layer_types=None, query_pre_attn_scalar=256, hidden_size=64, head_dim=256,
                        intermediate_size=128,  # rows of 32-value blocks
                        rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 10000.0},
                                         "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}})
    path = write_tiny_gguf(tmp_path / "g.gguf", hf, type_name)
    ours = ln.load_model(path)
    theirs = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="g.gguf", dtype=torch.float32).eval()
    assert isinstance(ours, ln.Gemma3) and ours.config.sliding_window == SIZES["sliding_window"]
    reference = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        ref = reference[name].detach().numpy()
        assert np.array_equal(to_numpy(p.data), ref.T if name.endswith("_proj.weight") else ref), name
    idx = _ids(rng)
    with torch.no_grad(), ln.no_grad():
        assert max_rel_err(to_numpy(ours(idx)[0].data), theirs(torch.tensor(idx)).logits) < 1e-5
