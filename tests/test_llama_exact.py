"""The Llama family, exact against transformers: Llama, Qwen2, Qwen3 folders written by transformers
(random weights) give, in float64, the same logits, loss and EVERY parameter gradient as
``LlamaForCausalLM`` / ``Qwen2ForCausalLM`` / ``Qwen3ForCausalLM`` to 1e-10 relative; greedy
generation with the KV cache gives the same tokens; bf16, sharded and old-style RoPE configs load;
``save_model`` writes a folder ``from_pretrained`` loads.

Oracle: transformers (float64, SDPA attention), with its RMSNorm and rotary tables kept in float64
(``llama_oracle.float64_transformers``; transformers computes both in float32 whatever the dtype).
"""

import json

import numpy as np
import pytest
import torch

import lora_np as ln
from lora_np import to_numpy
from hf_oracle import assert_equals_transformers, max_rel_err
from llama_oracle import SIZES, float64_transformers, load_hf, tiny_hf_llama

TOL = 1e-10
LLAMA3 = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
          "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
VARIANTS = {
    "llama": dict(kind="llama"),
    "llama-tied-llama3": dict(kind="llama", tie_word_embeddings=True, rope_parameters=LLAMA3),
    "llama-mha-bias": dict(kind="llama", num_key_value_heads=4, attention_bias=True, mlp_bias=True),
    "qwen2": dict(kind="qwen2"),
    "qwen3": dict(kind="qwen3"),
    "qwen3-tied-mqa": dict(kind="qwen3", tie_word_embeddings=True, num_key_value_heads=1, head_dim=16),
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    out = {}
    for name, spec in VARIANTS.items():
        path = tmp_path_factory.mktemp(name)
        tiny_hf_llama(path, bos_token_id=None, eos_token_id=None, **spec)
        out[name] = (path, spec["kind"])
    return out


def _ids(rng, batch=2, length=20):
    return rng.integers(0, SIZES["vocab_size"], size=(batch, length))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_logits_loss_and_every_gradient_equal_transformers(variant, folders, rng):
    path, kind = folders[variant]
    ours = ln.load_model(path, dtype=np.float64)
    with float64_transformers():
        assert_equals_transformers(ours, load_hf(path, kind), _ids(rng), _ids(rng), TOL)


@pytest.mark.parametrize("variant", ["llama", "qwen2", "qwen3-tied-mqa", "llama-tied-llama3"])
def test_greedy_generation_with_the_cache_equals_transformers(variant, folders, rng):
    path, kind = folders[variant]
    ours = ln.load_model(path, dtype=np.float64)
    idx = _ids(rng, batch=2, length=5)
    with float64_transformers():
        theirs = load_hf(path, kind)
        ref = theirs.generate(torch.tensor(idx), max_new_tokens=12, do_sample=False, pad_token_id=0).numpy()
    assert np.array_equal(ours.generate(idx, 12, temperature=0), ref)


def test_generation_past_the_context_slides_the_window(folders, rng):
    """Past max_position_embeddings the cache restarts on the last positions: each new token is the
    greedy argmax of a full forward over the last max_position_embeddings tokens (no cache)."""
    path, _ = folders["llama"]
    ours = ln.load_model(path, dtype=np.float64)
    limit = ours.config.max_position_embeddings
    out = ours.generate(_ids(rng, 1, limit - 2), 5, temperature=0)
    for t in range(limit - 2, limit + 3):
        with ln.no_grad():
            logits, _ = ours(out[:, max(0, t - limit):t])
        assert out[0, t] == int(to_numpy(logits.data)[0, -1].argmax())


@pytest.mark.parametrize("how", ["bf16", "fp16", "sharded", "sharded-bf16"])
def test_bf16_fp16_and_sharded_folders_load(how, tmp_path, rng):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(how.split("-")[-1], torch.float32)
    tiny_hf_llama(tmp_path, "qwen3", dtype=dtype, max_shard_size="20KB" if "sharded" in how else None)
    if "sharded" in how:
        assert (tmp_path / "model.safetensors.index.json").is_file()
        assert len(list(tmp_path.glob("model-*.safetensors"))) > 2
    ours = ln.load_model(tmp_path, dtype=np.float64)
    idx = _ids(rng)
    with float64_transformers(), torch.no_grad():
        ref = load_hf(tmp_path, "qwen3")(torch.tensor(idx)).logits
    with ln.no_grad():
        assert max_rel_err(to_numpy(ours(idx)[0].data), ref) < TOL


def test_old_style_rope_config_loads_as_the_new_one(folders, tmp_path, rng):
    """Downloaded Llama 3.2 folders spell RoPE as rope_theta + rope_scaling (with "rope_type")."""
    path, _ = folders["llama-tied-llama3"]
    cfg = json.loads((path / "config.json").read_text())
    params = cfg.pop("rope_parameters")
    cfg["rope_theta"] = params.pop("rope_theta")
    cfg["rope_scaling"] = params
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
    new, old = ln.load_model(path, dtype=np.float64), ln.load_model(tmp_path, dtype=np.float64)
    assert old.config.rope_scaling == new.config.rope_scaling and old.config.rope_theta == 500000.0
    idx = _ids(rng)
    with float64_transformers(), torch.no_grad():
        ref = load_hf(tmp_path, "llama")(torch.tensor(idx)).logits
    with ln.no_grad():
        assert max_rel_err(to_numpy(old(idx)[0].data), ref) < TOL


@pytest.mark.parametrize("variant", ["llama", "qwen2", "qwen3-tied-mqa"])
def test_save_model_writes_a_folder_from_pretrained_loads(variant, folders, tmp_path, rng):
    path, kind = folders[variant]
    ours = ln.load_model(path, dtype=np.float64)
    ln.save_model(ours, tmp_path / "saved")
    idx = _ids(rng)
    with float64_transformers(), torch.no_grad():
        ref = load_hf(tmp_path / "saved", kind)(torch.tensor(idx)).logits
    with ln.no_grad():
        assert max_rel_err(to_numpy(ours(idx)[0].data), ref) < TOL
    again = ln.load_model(tmp_path / "saved", dtype=np.float64)
    assert again.config == ours.config


def test_float32_model_matches_transformers_float32(folders, rng):
    """The everyday dtype, against unpatched transformers (float32 tables and RMSNorm)."""
    path, kind = folders["qwen3"]
    ours = ln.load_model(path)
    idx = _ids(rng)
    with torch.no_grad():
        ref = load_hf(path, kind, dtype=torch.float32)(torch.tensor(idx)).logits
    with ln.no_grad():
        assert max_rel_err(to_numpy(ours(idx)[0].data), ref) < 1e-5


def test_a_sharded_folder_is_read_tensor_by_tensor(tmp_path, backend_name):
    """The load's peak above the loaded model stays within a few tensors: never the whole file."""
    if backend_name != "numpy":
        pytest.skip("tracemalloc sees host memory only")
    import tracemalloc
    tiny_hf_llama(tmp_path, "llama", hidden_size=128, intermediate_size=256, num_hidden_layers=4,
                  max_shard_size="200KB")
    tracemalloc.start()
    model = ln.load_model(tmp_path)
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    largest = max(p.data.nbytes for p in model.parameters())
    total = sum(p.data.nbytes for p in model.parameters())
    assert total > 10 * largest and peak - held < 3 * largest, (peak - held, largest, total)
