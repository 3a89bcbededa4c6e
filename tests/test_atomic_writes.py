"""Interrupted writes: a save that fails after N bytes, or a process killed mid-save, leaves the
previous file intact and loadable (temp file + fsync + rename), and leaves no stray temp file
when it fails normally."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import lora_np
from lora_np import GPT, GPTConfig, LoraConfig, add_lora, load_adapter, load_gpt2, save_adapter, save_gpt2
from lora_np.io import atomic
from lora_np.data import CharTokenizer
from lora_np.optim import AdamW
from lora_np.io.train_checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def _model(seed):
    lora_np.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=7, block_size=8, n_layer=1, n_head=2, n_embd=8))


@pytest.fixture
def failing_writes(monkeypatch):
    """Make every atomic write fail after ``n`` bytes (a full disk, a lost mount)."""
    def install(n):
        def write_then_fail(f, data):
            f.write(memoryview(data)[:n])
            raise OSError(28, "No space left on device (simulated)")
        monkeypatch.setattr(atomic, "_write_chunks", write_then_fail)
    return install


@pytest.mark.parametrize("n_bytes", [0, 9, 200])
def test_failed_checkpoint_save_keeps_the_previous_one(tmp_path, failing_writes, n_bytes):
    save_gpt2(_model(0), tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    failing_writes(n_bytes)
    with pytest.raises(OSError, match="simulated"):
        save_gpt2(_model(1), tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no temp file left either
    for (_, a), (_, b) in zip(load_gpt2(tmp_path).named_parameters(), _model(0).named_parameters()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_failed_adapter_and_tokenizer_saves_keep_the_previous_files(tmp_path, failing_writes):
    model = add_lora(_model(0), LoraConfig(r=2))
    save_adapter(model, tmp_path / "adapter")
    CharTokenizer("abc").save(tmp_path / "vocab")
    failing_writes(50)
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data + 1.0
    with pytest.raises(OSError):
        save_adapter(model, tmp_path / "adapter")
    with pytest.raises(OSError):
        CharTokenizer("xyz").save(tmp_path / "vocab")
    fresh = _model(0)
    load_adapter(fresh, tmp_path / "adapter")
    assert not fresh.transformer.h[0].attn.c_attn.lora_B["default"].weight.numpy().any()  # the saved B = 0
    assert CharTokenizer.load(tmp_path / "vocab").chars == list("abc")
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == ["adapter_config.json",
                                                                         "adapter_model.safetensors"]


def test_failed_training_checkpoint_keeps_the_latest_complete_one(tmp_path, failing_writes):
    model = add_lora(_model(0), LoraConfig(r=2))
    opt = AdamW([p for p in model.parameters() if p.requires_grad])
    state = {"history": [], "schedule": {"last_step": 0, "base_lrs": [1e-3]}, "data_rng": {}, "backend_rng": {}}
    save_checkpoint(tmp_path, 10, model, opt, state)
    failing_writes(30)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, 20, model, opt, state)
    ckpt = latest_checkpoint(tmp_path)
    assert ckpt.name == "step_000010"
    assert load_checkpoint(ckpt, model, opt)["step"] == 10


KILLER = """
import sys, lora_np
from lora_np import GPT, GPTConfig, save_gpt2
lora_np.manual_seed(1)
model = GPT(GPTConfig(vocab_size=64, block_size=64, n_layer=4, n_head=4, n_embd=256))
print("ready", flush=True)
while True:
    save_gpt2(model, sys.argv[1])
"""


def test_a_process_killed_mid_save_leaves_a_loadable_checkpoint(tmp_path):
    big = GPTConfig(vocab_size=64, block_size=64, n_layer=4, n_head=4, n_embd=256)
    lora_np.manual_seed(0)
    save_gpt2(GPT(big), tmp_path)  # version A; the child keeps writing version B (~13 MB) over it
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for delay in (0.3, 0.7, 1.1):
        child = subprocess.Popen([sys.executable, "-c", KILLER, str(tmp_path)], env=env, stdout=subprocess.PIPE,
                                 text=True)
        assert child.stdout.readline().strip() == "ready"
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        model = load_gpt2(tmp_path)  # A or B, complete either way
        wte = model.transformer.wte.weight.numpy()
        lora_np.manual_seed(0)
        a = GPT(big).transformer.wte.weight.numpy()
        lora_np.manual_seed(1)
        b = GPT(big).transformer.wte.weight.numpy()
        assert np.array_equal(wte, a) or np.array_equal(wte, b)
