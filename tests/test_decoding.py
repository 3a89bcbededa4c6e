"""Decoding: cached generation against the cache-free forward, the one-query attention of a decode
step (cache.attend_one) and top-k sampling on a partial sort (generation.sample_next).

Oracles: the cache-free forward of the whole model (cached greedy tokens must be its argmax tokens,
cached logits its logits), attention written out in NumPy with the K/V heads repeated, and the
top-k distribution's closed form."""

import math

import numpy as np
import pytest

import lora_np as ln
from lora_np.models import KVCache
from lora_np.models.cache import attend, attend_one
from lora_np.models.generation import sample_next

FAMILIES = {
    "llama": dict(),
    "qwen2 (q/k/v biases)": dict(model_type="qwen2", qkv_bias=True),
    "qwen3 (q/k norms, head_dim)": dict(model_type="qwen3", qk_norm=True, head_dim=6),
    "llama (o and MLP biases)": dict(o_bias=True, mlp_bias=True),
}


def _llama(dtype=np.float64, layers=2, vocab=31, **switches):
    config = ln.LlamaConfig(vocab_size=vocab, hidden_size=16, intermediate_size=24, num_hidden_layers=layers,
                            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                            tie_word_embeddings=False, **switches)
    model = ln.Llama(config, dtype=dtype).eval()
    for _, p in model.named_parameters():  # biases and norm weights away from 0 and 1, so that each one counts
        p.data[...] += ln.backend.xp.asarray(np.random.default_rng(3).normal(0, 0.3, p.shape).astype(dtype))
    return model


def _full_forward_greedy(model, prompt, n):
    """Greedy tokens and each step's last logits from the cache-free forward over the whole prefix."""
    ids, logits = prompt, []
    with ln.no_grad():
        for _ in range(n):
            last = ln.to_numpy(model(ids)[0].data)[:, -1]
            logits.append(last)
            ids = np.concatenate([ids, last.argmax(-1)[:, None]], axis=1)
    return ids, np.stack(logits, axis=1)


def _cached_logits(model, ids, prompt_len):
    cache = KVCache(ids.shape[1])
    with ln.no_grad():
        steps = [model.hidden_states(ids[:, :prompt_len], cache=cache).data[:, -1]]
        steps += [model.hidden_states(ids[:, t:t + 1], cache=cache).data[:, -1]
                  for t in range(prompt_len, ids.shape[1] - 1)]
    return np.stack([ln.to_numpy(h @ model.head_weight.data.T) for h in steps], axis=1)


@pytest.mark.parametrize("base", ["float32", "lora", "bf16"])
def test_cached_greedy_tokens_and_logits_equal_the_full_forward_s(base, rng):
    """float32: a plain base, one with a LoRA adapter (B not zero: the adapter's layers run through
    their own forward), and a base kept in bfloat16 (its quantized layers likewise). The greedy
    tokens of ``generate`` are the full forward's; the logits agree to float32 rounding."""
    model = _llama(np.float32, layers=3, vocab=97, **FAMILIES["qwen3 (q/k norms, head_dim)"])
    if base == "lora":
        ln.add_lora(model, ln.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.data[...] = ln.backend.xp.asarray(rng.normal(0, 0.2, p.shape).astype(np.float32))
    elif base == "bf16":
        ln.quantize_model(model, "bf16")
    prompt = rng.integers(0, 97, size=(2, 5))
    want, want_logits = _full_forward_greedy(model, prompt, 12)
    np.testing.assert_array_equal(model.generate(prompt, 12, temperature=0), want)
    np.testing.assert_allclose(_cached_logits(model, want, 5), want_logits, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("heads", [(4, 4), (6, 2), (4, 1)])
def test_attend_one_is_softmax_attention_over_every_key(heads, rng):
    """One query per row against T_k cached keys, grouped-query heads included: NumPy's softmax(q kᵀ/√d) v
    with each K/V head repeated for its G query heads, and the same as the masked kernels' answer."""
    h, h_kv = heads
    q, keys, values = rng.normal(size=(2, h, 1, 8)), rng.normal(size=(2, h_kv, 7, 8)), rng.normal(size=(2, h_kv, 7, 5))
    k_rep, v_rep = np.repeat(keys, h // h_kv, axis=1), np.repeat(values, h // h_kv, axis=1)
    s = q @ k_rep.swapaxes(-1, -2) / math.sqrt(8)
    p = np.exp(s - s.max(-1, keepdims=True))
    want = (p / p.sum(-1, keepdims=True)) @ v_rep
    np.testing.assert_allclose(attend_one(q, keys, values), want, rtol=1e-12, atol=1e-13)
    y = np.empty((2, 1, h, 5)).swapaxes(1, 2)  # a heads view of a merged layout, as the layers pass it
    assert attend(q, keys, values, y=y) is y
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-13)
    two = attend(np.concatenate([q, q], axis=2), keys, values)  # T = 2: the masked kernels; its last row sees all
    np.testing.assert_allclose(two[:, :, -1:], want, rtol=1e-12, atol=1e-13)


def test_top_k_samples_only_and_all_of_the_k_largest():
    """4,000 rows of the same logits, top_k=3: every sample is one of the three largest (ranks found by a
    full sort here), and each of them is drawn, at about its renormalised probability."""
    logits = np.array([0.3, 2.0, -1.0, 1.5, 1.9, 0.0, 1.0], dtype=np.float32)
    top = set(np.argsort(logits)[-3:].tolist())
    ln.manual_seed(0)
    got = ln.to_numpy(sample_next(ln.backend.xp.asarray(np.tile(logits, (4000, 1))), 1.0, 3))
    assert set(got.tolist()) == top
    p = np.exp(logits[sorted(top)]) / np.exp(logits[sorted(top)]).sum()
    freq = np.array([(got == i).mean() for i in sorted(top)])
    np.testing.assert_allclose(freq, p, atol=0.04)


