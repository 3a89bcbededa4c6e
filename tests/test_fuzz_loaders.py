"""Fuzzing the loaders with hypothesis: mutated bytes (flips, truncations, insertions) and mutated
JSON fields (any JSON value in any field). A loader may succeed or raise ValueError /
FileNotFoundError; it must never crash with another exception, hang, or half-load a model."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file as reference_load

import lora_np
from lora_np import GPT, GPTConfig, LoraConfig, add_lora, load_adapter, load_gpt2, save_adapter, save_gpt2
from lora_np.data import CharTokenizer
from lora_np.optim import AdamW
from lora_np.io.safetensors_file import read_safetensors, write_safetensors
from lora_np.io.train_checkpoint import load_checkpoint, save_checkpoint

CLEAN = (ValueError, FileNotFoundError)
FUZZ = settings(max_examples=60, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])
JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
                           | st.text(max_size=8), lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)


@st.composite
def mutated(draw, data):
    """``data`` with a few bytes flipped, then maybe truncated or grown."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(0, 4))):
        if buf:
            buf[draw(st.integers(0, len(buf) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.one_of(st.none(), st.integers(0, len(buf))))
    if cut is not None:
        buf = buf[:cut]
    return bytes(buf) + draw(st.binary(max_size=8))


def _tiny():
    lora_np.manual_seed(0)
    return GPT(GPTConfig(vocab_size=7, block_size=4, n_layer=1, n_head=1, n_embd=4))


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    write_safetensors(root / "t.safetensors", {"a": np.arange(6, dtype=np.float32).reshape(2, 3),
                                               "b": np.ones(4, dtype=np.int64)}, {"format": "pt"})
    save_gpt2(_tiny(), root / "ckpt")
    save_adapter(add_lora(_tiny(), LoraConfig(r=2)), root / "adapter")
    CharTokenizer("abc>").save(root / "vocab")
    return root


def _fresh_copy(src, dst):
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    return dst


def _only_clean_errors(fn):
    try:
        return fn()
    except CLEAN:
        return None


@FUZZ
@given(data=st.data())
def test_safetensors_reader(originals, data):
    raw = data.draw(mutated((originals / "t.safetensors").read_bytes()))
    path = originals / "fuzzed.safetensors"
    path.write_bytes(raw)
    tensors = _only_clean_errors(lambda: read_safetensors(path))
    if tensors is not None:  # what we read is what the reference package reads, bit for bit
        _assert_same_tensors(tensors[0], reference_load(path))


def _assert_same_tensors(ours, reference):
    assert sorted(ours) == sorted(reference)
    for name, value in ours.items():
        assert value.dtype == reference[name].dtype and value.shape == reference[name].shape, name
        np.testing.assert_array_equal(value, reference[name], err_msg=name)  # NaN equals NaN here


@FUZZ
@given(data=st.data(), name=st.sampled_from(["model.safetensors", "config.json"]))
def test_gpt2_checkpoint_bytes(originals, tmp_path, data, name):
    d = _fresh_copy(originals / "ckpt", tmp_path / "ckpt")
    (d / name).write_bytes(data.draw(mutated((d / name).read_bytes())))
    model = _only_clean_errors(lambda: load_gpt2(d))
    if model is not None:  # whole, and holding exactly the (possibly mutated) file's values
        stored = reference_load(d / "model.safetensors")
        ours = {k: lora_np.to_numpy(v) for k, v in model.state_dict().items()}
        _assert_same_tensors(ours, stored)


@FUZZ
@given(field=st.sampled_from(["n_embd", "n_layer", "n_head", "n_positions", "vocab_size", "activation_function",
                              "n_inner", "layer_norm_epsilon", "resid_pdrop", "tie_word_embeddings"]),
       value=JSON_VALUES)
def test_gpt2_config_fields(originals, tmp_path, field, value):
    d = _fresh_copy(originals / "ckpt", tmp_path / "ckpt")
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, field: value}))
    _only_clean_errors(lambda: load_gpt2(d))


def _state(model):
    return {k: v.copy() for k, v in model.state_dict().items()}, [n for n, _ in model.named_modules()]


@FUZZ
@given(data=st.data(), name=st.sampled_from(["adapter_model.safetensors", "adapter_config.json"]))
def test_adapter_files_leave_the_model_unchanged(originals, tmp_path, data, name):
    d = _fresh_copy(originals / "adapter", tmp_path / "adapter")
    (d / name).write_bytes(data.draw(mutated((d / name).read_bytes())))
    model = _tiny()
    before = _state(model)
    if _only_clean_errors(lambda: load_adapter(model, d)) is None:
        after = _state(model)
        assert after[1] == before[1]
        for k, v in before[0].items():
            np.testing.assert_array_equal(after[0][k], v)


@FUZZ
@given(field=st.sampled_from(["r", "lora_alpha", "target_modules", "lora_dropout", "use_rslora", "bias",
                              "peft_type", "use_dora"]), value=JSON_VALUES)
def test_adapter_config_fields(originals, tmp_path, field, value):
    d = _fresh_copy(originals / "adapter", tmp_path / "adapter")
    cfg = json.loads((d / "adapter_config.json").read_text())
    (d / "adapter_config.json").write_text(json.dumps({**cfg, field: value}))
    model = _tiny()
    before = _state(model)
    if _only_clean_errors(lambda: load_adapter(model, d)) is None:
        assert _state(model)[1] == before[1]


@FUZZ
@given(data=st.data())
def test_tokenizer_file(originals, tmp_path, data):
    d = _fresh_copy(originals / "vocab", tmp_path / "vocab")
    (d / "char_vocab.json").write_bytes(data.draw(mutated((d / "char_vocab.json").read_bytes())))
    _only_clean_errors(lambda: CharTokenizer.load(d))


@FUZZ
@given(data=st.data())
def test_jsonl_data_file(tmp_path, data):
    """A mutated prompt/completion file: examples, or a ValueError that names the line."""
    good = (b'{"prompt": "ab>", "completion": "ba"}\n{"prompt": "c>", "completion": "c"}\n'
            b'{"prompt": "", "completion": "a"}\n')
    path = tmp_path / "data.jsonl"
    path.write_bytes(data.draw(mutated(good)))
    from lora_np.data import jsonl_dataset
    _only_clean_errors(lambda: jsonl_dataset(path, 4, CharTokenizer("abc>\n")))


@FUZZ
@given(data=st.data(), name=st.sampled_from(["vocab.json", "merges.txt"]))
def test_bpe_model_folder_tokenizer(originals, tmp_path, data, name):
    """A model folder's BPE files, mutated: loaded (with a vocabulary that fits the model) or refused."""
    from lora_np import BPETokenizer
    from lora_np.app.model_dir import load_model_dir
    d = _fresh_copy(originals / "ckpt", tmp_path / "bpe_ckpt")
    BPETokenizer.train("abab cdcd abab", 258).save(d)
    (d / name).write_bytes(data.draw(mutated((d / name).read_bytes())))
    _only_clean_errors(lambda: load_model_dir(d))


@pytest.fixture(scope="module")
def trainer_checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    model = add_lora(_tiny(), LoraConfig(r=2))
    opt = AdamW([p for p in model.parameters() if p.requires_grad])
    model(np.array([[1, 2, 3]]), np.array([[2, 3, 4]]))[1].backward()
    opt.step()
    return save_checkpoint(root, 1, model, opt, {"history": [], "schedule": {"last_step": 1, "base_lrs": [1e-3]},
                                                 "data_rng": {}, "backend_rng": {}})


@FUZZ
@given(data=st.data(), name=st.sampled_from(["trainable.safetensors", "optimizer.safetensors", "state.json"]))
def test_trainer_checkpoint_leaves_the_model_unchanged(trainer_checkpoint, tmp_path, data, name):
    d = _fresh_copy(trainer_checkpoint, tmp_path / "step")
    (d / name).write_bytes(data.draw(mutated((d / name).read_bytes())))
    model = add_lora(_tiny(), LoraConfig(r=2))
    before = _state(model)
    if _only_clean_errors(lambda: load_checkpoint(d, model, AdamW([p for p in model.parameters()
                                                                   if p.requires_grad]))) is None:
        for k, v in before[0].items():
            np.testing.assert_array_equal(_state(model)[0][k], v)


def test_fuzz_inputs_are_real_files(originals):
    assert Path(originals / "ckpt" / "model.safetensors").stat().st_size > 100
