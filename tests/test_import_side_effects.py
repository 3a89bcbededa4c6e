"""lora_np is a guest in the user's process: importing it and training with it leave the process's
BLAS thread count as it was, and the allocator untouched unless asked.

Oracle: threadpoolctl's own reading of the BLAS libraries, in a fresh subprocess (a test process
has other libraries' settings mixed in), before the import, after it and after a training step.
mallopt is observed by wrapping ctypes' CDLL before the import: any call to libc's mallopt from
lora_np would go through it.
"""

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

SCRIPT = r"""
import ctypes, json
import numpy as np
from threadpoolctl import threadpool_info

mallopt_calls = []
_CDLL = ctypes.CDLL
class SpyCDLL(_CDLL):
    def __getattr__(self, name):
        fn = _CDLL.__getattr__(self, name)
        if name == "mallopt":
            return lambda *args: mallopt_calls.append(args) or fn(*args)
        return fn
ctypes.CDLL = SpyCDLL

def blas_threads():
    return sorted(lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas")

seen = {"before": blas_threads()}
import lora_np
from lora_np import GPT, GPTConfig, LoraConfig, add_lora
from lora_np.optim import AdamW
seen["after_import"] = blas_threads()
seen["mallopt_at_import"] = len(mallopt_calls)
lora_np.manual_seed(0)
model = add_lora(GPT(GPTConfig(vocab_size=64, block_size=64, n_layer=2, n_head=4, n_embd=128)), LoraConfig(r=4))
opt = AdamW([p for p in model.parameters() if p.requires_grad])
x = np.random.default_rng(0).integers(0, 64, size=(8, 64))
_, loss = model(x, x)
loss.backward()
opt.step()
seen["after_step"] = blas_threads()
from lora_np.parallel import tune_host_allocator
seen["tuned"] = tune_host_allocator()
seen["mallopt_when_asked"] = len(mallopt_calls)
print(json.dumps(seen))
"""


@pytest.mark.parametrize("threads", ["1", "2"])
def test_blas_threads_and_allocator_are_left_alone(threads, backend_name):
    if backend_name != "numpy":
        pytest.skip("BLAS threads are a CPU matter")
    pytest.importorskip("threadpoolctl")
    env = {"OPENBLAS_NUM_THREADS": threads, "LORA_NP_NUM_THREADS": "2", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["before"] and seen["before"] == [int(threads)] * len(seen["before"])
    assert seen["after_import"] == seen["before"]
    assert seen["after_step"] == seen["before"]
    assert seen["mallopt_at_import"] == 0
    if sys.platform.startswith("linux") and seen["tuned"]:
        assert seen["mallopt_when_asked"] == 2
