"""Issue 38's catalogue for the model-folder surface: bad config.json and weights files, each one
test. Each checks the error kind; that the message is one line naming the file (and so the folder);
through the command line, exit 2, one line on stderr and no traceback; and that nothing on disk changed.

Also issue 38 item 5: RoPE settings read with transformers' precedence (a non-empty top-level
rope_scaling wins over rope_parameters), checked against transformers' logits.
"""

import hashlib
import json
import shutil

import numpy as np
import pytest

import lora_np as ln
from helpers import cli
from llama_oracle import tiny_hf_llama, tiny_qwen3_folder

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16}


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A Qwen3 folder the CLI reads (Qwen's tokenizer.json), in float32."""
    return tiny_qwen3_folder(tmp_path_factory.mktemp("good") / "qwen3")


def _config(**changes):
    def change(path):
        cfg = json.loads((path / "config.json").read_text())
        cfg.update(changes)
        (path / "config.json").write_text(json.dumps(cfg))
    return change


def _remove(name):
    return lambda path: (path / name).unlink()


def _write(name, data):
    return lambda path: (path / name).write_bytes(data)


def _truncate(name):
    return lambda path: (path / name).write_bytes((path / name).read_bytes()[:-100])


# (id, damage, error kind, the file the message must name, a phrase it must hold)
CASES = [
    ("heads-not-a-multiple-of-kv-heads", _config(num_key_value_heads=3), ValueError, "config.json",
     "num_key_value_heads=3"),
    ("odd-head-dim", _config(head_dim=11), ValueError, "config.json", "head_dim=11"),
    ("rope-yarn", _config(rope_parameters={"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}), ValueError,
     "config.json", "'yarn'"),
    ("rope-dynamic-old-spelling", _config(rope_parameters=None, rope_theta=1e4, rope_scaling={"type": "dynamic",
                                                                                            "factor": 2.0}),
     ValueError, "config.json", "'dynamic'"),
    ("rope-default-with-a-leftover-yarn", _config(rope_parameters={"rope_type": "default", "rope_theta": 1e4},
                                                  rope_scaling=YARN), ValueError, "config.json", "'yarn'"),
    ("rope-scaling-not-an-object", _config(rope_scaling="linear"), ValueError, "config.json", "rope_scaling"),
    ("partial-rotary", _config(rope_parameters={"rope_type": "default", "rope_theta": 1e4,
                                                "partial_rotary_factor": 0.5}), ValueError, "config.json",
     "partial_rotary_factor"),
    ("model-type-unknown", _config(model_type="mistral"), ValueError, "config.json", "'mistral'"),
    ("missing-field", _config(hidden_size=None), ValueError, "config.json", "hidden_size"),
    ("hidden-act-gelu", _config(hidden_act="gelu"), ValueError, "config.json", "'gelu'"),
    ("sliding-window", _config(use_sliding_window=True), ValueError, "config.json", "sliding-window"),
    ("config-not-json", _write("config.json", b"{not json"), ValueError, "config.json", "JSON"),
    ("config-missing", _remove("config.json"), FileNotFoundError, "config.json", "not found"),
    ("sizes-disagree-with-weights", _config(intermediate_size=64), ValueError, "", "disagrees with the weights"),
    ("weights-missing", _remove("model.safetensors"), FileNotFoundError, "", "model.safetensors"),
    ("weights-truncated", _truncate("model.safetensors"), ValueError, "model.safetensors", "truncated"),
]


def _snapshot(path):
    return {p.relative_to(path): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.rglob("*"))
            if p.is_file()}


def _damaged(good, tmp_path, damage):
    path = tmp_path / "model"
    shutil.copytree(good, path)
    damage(path)
    return path


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_model_folder(case, good, tmp_path, capsys):
    _, damage, kind, file_name, phrase = case
    path = _damaged(good, tmp_path, damage)
    before = _snapshot(tmp_path)
    named = str(path / file_name) if file_name else str(path)
    with pytest.raises(kind) as excinfo:  # the library names the file, not only the command line
        ln.load_model(path)
    message = str(excinfo.value)
    assert "\n" not in message and named in message and phrase in message, message
    out = tmp_path / "out"
    code, _, err = cli(capsys, "merge", "--base", path, "--adapter", tmp_path / "adapter", "--out", out)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert named in err, err
    assert not out.exists() and _snapshot(tmp_path) == before


def test_the_catalogue_is_long():
    assert len(CASES) >= 15


def _logits_both(path, ids):
    ours = ln.load_model(path, dtype=np.float64)
    with ln.no_grad():
        logits, _ = ours(ids)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float64).eval()
    with torch.no_grad():
        return ln.to_numpy(logits.data), theirs(torch.tensor(ids)).logits.numpy()


def test_a_leftover_rope_scaling_is_read_as_transformers_reads_it(tmp_path):
    """Issue 38 item 5: rope_parameters says default, a top-level rope_scaling says llama3: transformers 5
    reads llama3 (its rope_scaling wins, convert_rope_params_to_dict) with the top-level rope_theta, and so
    does lora_np; the logits agree, and differ from plain RoPE's."""
    path = tmp_path / "m"
    tiny_hf_llama(path, "llama", bos_token_id=None, eos_token_id=None)
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, rope_theta=500000.0,
               rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                             "original_max_position_embeddings": 16})
    (path / "config.json").write_text(json.dumps(cfg))
    assert transformers.AutoConfig.from_pretrained(path).rope_parameters["rope_type"] == "llama3"
    ids = np.random.default_rng(0).integers(0, 96, size=(2, 40))
    ours, theirs = _logits_both(path, ids)
    assert np.abs(ours - theirs).max() < 1e-4 * np.abs(theirs).max()
    plain = ln.load_model(_plain_copy(path, tmp_path / "plain"), dtype=np.float64)
    with ln.no_grad():
        logits, _ = plain(ids)
    assert np.abs(ln.to_numpy(logits.data) - theirs).max() > 1e-3 * np.abs(theirs).max()


def _plain_copy(path, dst):
    shutil.copytree(path, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg["rope_scaling"] = None
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst
