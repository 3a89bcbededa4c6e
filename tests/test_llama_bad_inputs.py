"""Bad input for the Llama family: one clear line naming what is wrong and what is accepted, raised
before anything is built or changed (issue 23's list)."""

import json
import shutil

import numpy as np
import pytest

import lora_np as ln
from lora_np import LoraConfig, add_lora, to_numpy
from llama_oracle import tiny_hf_llama


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama")
    tiny_hf_llama(path, "llama")
    return path


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    path = tmp_path_factory.mktemp("sharded")
    tiny_hf_llama(path, "qwen2", max_shard_size="20KB")
    return path


def _copy(src, dst, **config_changes):
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    for key, value in config_changes.items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def _one_line(excinfo, *phrases):
    message = str(excinfo.value)
    assert "\n" not in message, message
    for phrase in phrases:
        assert phrase in message, message


def test_unsupported_model_type_names_the_supported_ones(folder, tmp_path):
    path = _copy(folder, tmp_path / "m", model_type="mistral")
    with pytest.raises(ValueError) as e:
        ln.load_model(path)
    _one_line(e, "'mistral'", "gpt2", "llama", "qwen2", "qwen3")


@pytest.mark.parametrize("rope", [{"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0},
                                  {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}])
def test_rope_scaling_we_do_not_implement(rope, folder, tmp_path):
    path = _copy(folder, tmp_path / "m", rope_parameters=rope)
    with pytest.raises(ValueError) as e:
        ln.load_model(path)
    _one_line(e, repr(rope["rope_type"]), "default", "llama3")


def test_old_style_rope_scaling_we_do_not_implement(folder, tmp_path):
    path = _copy(folder, tmp_path / "m", rope_parameters=None, rope_theta=10000.0,
                 rope_scaling={"type": "linear", "factor": 2.0})
    with pytest.raises(ValueError) as e:
        ln.load_model(path)
    _one_line(e, "'linear'", "llama3")


def test_heads_not_a_multiple_of_key_value_heads(folder, tmp_path):
    path = _copy(folder, tmp_path / "m", num_key_value_heads=3)
    with pytest.raises(ValueError) as e:
        ln.load_model(path)
    _one_line(e, "num_attention_heads=4", "num_key_value_heads=3")
    with pytest.raises(ValueError):
        ln.LlamaConfig(num_attention_heads=9, num_key_value_heads=2)


def test_missing_shard(sharded, tmp_path):
    path = _copy(sharded, tmp_path / "m")
    shard = sorted(path.glob("model-*.safetensors"))[1]
    shard.unlink()
    with pytest.raises(FileNotFoundError) as e:
        ln.load_model(path)
    _one_line(e, shard.name, "missing")


def test_shard_whose_tensors_disagree_with_the_index(sharded, tmp_path):
    path = _copy(sharded, tmp_path / "m")
    index = json.loads((path / "model.safetensors.index.json").read_text())
    name = "model.norm.weight"
    shards = sorted(set(index["weight_map"].values()))
    index["weight_map"][name] = next(s for s in shards if s != index["weight_map"][name])
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError) as e:
        ln.load_model(path)
    _one_line(e, "disagree with model.safetensors.index.json", name)


@pytest.mark.parametrize("change, phrase", [({"intermediate_size": 60}, "mlp.gate_proj.weight"),
                                            ({"num_hidden_layers": 3}, "model.layers.2"),
                                            ({"tie_word_embeddings": True}, "lm_head.weight"),
                                            ({"head_dim": 16}, "q_proj.weight")])
def test_config_that_disagrees_with_its_tensors(change, phrase, folder, tmp_path):
    path = _copy(folder, tmp_path / "m", **change)
    with pytest.raises(ValueError) as e:
        ln.load_model(path)
    _one_line(e, "config.json disagrees with the weights", phrase)


def test_lora_targets_that_match_nothing_name_what_exists(folder):
    model = ln.load_model(folder)
    before = {n: to_numpy(p.data).copy() for n, p in model.named_parameters()}
    with pytest.raises(ValueError) as e:
        add_lora(model, LoraConfig(r=2, target_modules=["c_attn", "c_fc"]))
    _one_line(e, "c_attn", "q_proj", "gate_proj", "down_proj")
    assert not ln.lora.lora_layers(model) and not getattr(model, "peft_config", None)
    assert all(np.array_equal(before[n], to_numpy(p.data)) for n, p in model.named_parameters())


def test_other_refusals_before_anything_is_read(folder, tmp_path):
    with pytest.raises(FileNotFoundError):
        ln.load_model(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="quantization 'nf5'"):
        ln.load_model(folder, quantize="nf5")
    path = _copy(folder, tmp_path / "m", hidden_act="gelu")
    with pytest.raises(ValueError, match="hidden_act 'gelu'"):
        ln.load_model(path)
    with pytest.raises(TypeError, match="save_model needs a GPT or a Llama"):
        ln.save_model(object(), tmp_path / "out")
    model = add_lora(ln.load_model(folder), LoraConfig(r=2, target_modules=["q_proj"]))
    with pytest.raises(ValueError, match="carries a LoRA adapter"):
        ln.save_model(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_configs_a_folder_cannot_express(tmp_path):
    with pytest.raises(ValueError, match="model_type must be one of"):
        ln.LlamaConfig(model_type="mistral")
    model = ln.Llama(ln.LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                                    num_attention_heads=2, num_key_value_heads=1, model_type="qwen3"))  # no qk_norm
    with pytest.raises(ValueError) as e:
        ln.save_model(model, tmp_path / "out")
    _one_line(e, "'qwen3'", "qk_norm=False")
    assert not (tmp_path / "out").exists()
