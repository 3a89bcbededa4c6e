"""transformers 4.x as a second oracle, for folders lora_np writes that 4.x users load.

The test environment has transformers 5; 4.x reads config.json differently (RoPE from the top-level
``rope_theta`` / ``rope_scaling``, not ``rope_parameters``). An install of 4.x beside it, e.g.

    pip install --no-deps --target /tmp/tf4 "transformers==4.57.1" "huggingface_hub==0.36.0" "tokenizers==0.22.1"

named by ``LORA_NP_TRANSFORMERS4=/tmp/tf4``, is put first on the PYTHONPATH of a subprocess (the same
torch, numpy and safetensors), which loads a folder and saves its logits. Without it, the tests
that need it are skipped and the pure checks of the written config stand in.
"""

import os
import subprocess
import sys

import numpy as np

TRANSFORMERS4 = os.environ.get("LORA_NP_TRANSFORMERS4")

SCRIPT = """
import sys, numpy as np, torch, transformers
assert transformers.__version__.startswith("4."), transformers.__version__
model = transformers.AutoModelForCausalLM.from_pretrained(sys.argv[1], torch_dtype=torch.float32).eval()
ids = torch.from_numpy(np.load(sys.argv[2]))
with torch.no_grad():
    np.save(sys.argv[3], model(ids).logits.numpy())
"""


def transformers4_logits(folder, ids, tmp_path):
    """The logits transformers 4.x's AutoModelForCausalLM gives for ``ids`` (a torch LongTensor) on ``folder``."""
    np.save(tmp_path / "ids.npy", ids.numpy())
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([TRANSFORMERS4, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(folder), str(tmp_path / "ids.npy"),
                           str(tmp_path / "logits.npy")], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return np.load(tmp_path / "logits.npy")
