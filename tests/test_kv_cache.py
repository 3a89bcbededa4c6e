"""The one key/value cache (lora_np/models/cache.py): bounded memory, sliding windows, positions.

Oracles: the cache-free forward of the same model (the positions a cached step computes must give
the logits of a full forward over the whole prefix), and, for a sliding window, RoPE's shift
invariance: a one-layer Llama whose only layer attends over the last w positions gives, at the newest
position, the logits of a plain forward over just those w tokens."""

import numpy as np
import pytest

import lora_np as ln
from lora_np.models import KVCache


def _llama(layers=1, context=32):
    config = ln.LlamaConfig(vocab_size=29, hidden_size=16, intermediate_size=24, num_hidden_layers=layers,
                            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=context)
    return ln.Llama(config, dtype=np.float64).eval()


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_cached_steps_give_the_full_forward_s_logits(family, rng):
    model = _llama(2) if family == "llama" else ln.GPT(ln.GPTConfig(vocab_size=29, block_size=32, n_layer=2, n_head=2,
                                                                    n_embd=8), dtype=np.float64).eval()
    ids = rng.integers(0, 29, size=(2, 11))
    cache = KVCache(capacity=11)
    with ln.no_grad():
        pieces = [model.hidden_states(ids[:, :6], cache=cache)] + [
            model.hidden_states(ids[:, t:t + 1], cache=cache) for t in range(6, 11)]
        full = model.hidden_states(ids)
    got = np.concatenate([ln.to_numpy(p.data) for p in pieces], axis=1)
    np.testing.assert_allclose(got, ln.to_numpy(full.data), rtol=1e-10, atol=1e-12)
    assert cache.length == 11
    assert all(keys.shape[2] == 11 for keys, _, _ in cache.layers.values())  # capacity, not the context (32)


def test_generate_allocates_prompt_plus_new_tokens_not_the_context(monkeypatch):
    model = _llama(1, context=4096)
    sizes = []
    update = KVCache.update
    monkeypatch.setattr(KVCache, "update", lambda self, k, v, i: sizes.append(self.capacity) or update(self, k, v, i))
    model.generate(np.array([[1, 2, 3]]), 5, temperature=0)
    assert set(sizes) == {8}


def test_a_window_layer_keeps_only_its_window(rng):
    """Keys come back as the full cache's last window-1 old positions and the new ones; at most
    ``window`` positions are kept between updates."""
    window, full, sliding = 4, KVCache(capacity=20), KVCache(capacity=20, windows={0: 4})
    seen = 0
    for t in (6, 1, 1, 3, 1, 1):
        k, v = rng.normal(size=(2, 2, t, 3)), rng.normal(size=(2, 2, t, 3))
        all_k, all_v = full.update(k, v, 0)
        got_k, got_v = sliding.update(k, v, 0)
        first = max(0, seen - (window - 1))
        np.testing.assert_array_equal(got_k, all_k[:, :, first:])
        np.testing.assert_array_equal(got_v, all_v[:, :, first:])
        seen += t
        assert sliding.layers[0][0].shape[2] == min(window, seen) and sliding.length == seen == full.length


def test_one_token_steps_attend_over_the_window_only(rng):
    """RoPE depends on offsets only, so a one-layer Llama attending over the last w positions gives the
    logits of a plain forward over those w tokens (w = 3, prompt of w tokens, then single tokens)."""
    model, window = _llama(1), 3
    model.attention_windows = {0: window}
    ids = rng.integers(0, 29, size=(1, 9))
    cache = KVCache(capacity=9, windows=model.attention_windows)
    with ln.no_grad():
        model.hidden_states(ids[:, :window], cache=cache)
        for t in range(window, 9):
            step = model.hidden_states(ids[:, t:t + 1], cache=cache)
            alone = model.hidden_states(ids[:, t + 1 - window:t + 1])
            np.testing.assert_allclose(ln.to_numpy(step.data)[:, -1], ln.to_numpy(alone.data)[:, -1], rtol=1e-9,
                                       atol=1e-11)
    assert cache.layers[0][0].shape[2] == window


def test_a_cache_under_grad_mode_is_refused(rng):
    with pytest.raises(ValueError, match="no_grad"):
        _llama().hidden_states(np.array([[1, 2]]), cache=KVCache(4))
