"""The GPT against Hugging Face's GPT2LMHeadModel (float64: logits, loss and every parameter's
gradient to 1e-9 relative), a full-model float64 gradcheck, generation, and bad input."""

import numpy as np
import pytest
import torch

import lora_np
from lora_np import GPT, GPTConfig, Tensor, gradcheck, load_gpt2, to_numpy
from hf_oracle import hf_loss, max_rel_err, tiny_hf_gpt2


@pytest.fixture
def hf_pair(tmp_path):
    hf = tiny_hf_gpt2(tmp_path)
    return hf, load_gpt2(tmp_path, dtype=np.float64)


def test_parameter_names_and_shapes_are_gpt2s():
    model = GPT(GPTConfig(vocab_size=50, block_size=8, n_layer=2, n_head=2, n_embd=16))
    shapes = {n: p.shape for n, p in model.named_parameters()}
    assert shapes["transformer.wte.weight"] == (50, 16)
    assert shapes["transformer.wpe.weight"] == (8, 16)
    assert shapes["transformer.h.1.attn.c_attn.weight"] == (16, 48)
    assert shapes["transformer.h.0.attn.c_proj.bias"] == (16,)
    assert shapes["transformer.h.0.mlp.c_fc.weight"] == (16, 64)
    assert shapes["transformer.h.0.mlp.c_proj.weight"] == (64, 16)
    assert shapes["transformer.ln_f.weight"] == (16,)
    assert len(shapes) == 2 + 2 * 12 + 2  # wte, wpe, 12 per block, ln_f


def test_names_match_hugging_face(hf_pair):
    hf, ours = hf_pair
    assert set(dict(ours.named_parameters())) == {n for n, _ in hf.named_parameters() if n != "lm_head.weight"}


def test_logits_loss_and_every_gradient_match_hf_in_float64(hf_pair, rng):
    hf, ours = hf_pair
    idx = rng.integers(0, 61, size=(3, 12))
    logits, _ = ours(idx[:, :-1])
    _, loss = ours(idx[:, :-1], idx[:, 1:])  # training: the fused LM head, no logits
    ref_logits, ref_loss = hf_loss(hf, idx[:, :-1], idx[:, 1:])
    assert max_rel_err(to_numpy(logits), ref_logits) < 1e-12
    assert abs(loss.item() - ref_loss.item()) < 1e-12
    loss.backward()
    ref_loss.backward()
    ref = dict(hf.named_parameters())
    errors = {n: max_rel_err(to_numpy(p.grad), ref[n].grad) for n, p in ours.named_parameters()}
    assert max(errors.values()) < 1e-9, sorted(errors.items(), key=lambda kv: -kv[1])[:3]


def test_float32_model_matches_hf_float32(tmp_path, rng):
    hf = tiny_hf_gpt2(tmp_path, dtype=torch.float32)
    ours = load_gpt2(tmp_path, dtype=np.float32)
    idx = rng.integers(0, 61, size=(2, 16))
    logits, _ = ours(idx)
    assert logits.dtype == np.float32
    assert max_rel_err(to_numpy(logits), hf(torch.tensor(idx)).logits) < 1e-5


def test_full_model_gradcheck_touches_every_parameter_family():
    lora_np.manual_seed(3)
    model = GPT(GPTConfig(vocab_size=7, block_size=4, n_layer=1, n_head=2, n_embd=4), dtype=np.float64)
    for p in model.parameters():  # non-trivial LayerNorm/bias values, so no gradient is trivially zero
        p.data += lora_np.backend.asarray(0.1 * np.random.default_rng(0).standard_normal(p.shape))
    idx, targets = np.array([[1, 5, 2, 6]]), np.array([[5, 2, 6, 0]])
    params = model.parameters()

    def loss_of(*_):
        return model(idx, targets)[1]

    assert gradcheck(loss_of, params, atol=1e-7, rtol=1e-5)


def test_loss_is_none_without_targets_and_init_follows_gpt2():
    lora_np.manual_seed(0)
    cfg = GPTConfig(vocab_size=100, block_size=16, n_layer=4, n_head=4, n_embd=128)
    model = GPT(cfg)
    logits, loss = model(np.zeros((2, 5), dtype=np.int64))
    assert loss is None and logits.shape == (2, 5, 100)
    sd = model.state_dict()
    assert abs(sd["transformer.h.0.attn.c_attn.weight"].std() - 0.02) < 0.002
    assert abs(sd["transformer.h.0.mlp.c_proj.weight"].std() - 0.02 / np.sqrt(8)) < 0.001
    assert np.all(sd["transformer.h.0.attn.c_attn.bias"] == 0) and np.all(sd["transformer.ln_f.weight"] == 1)


def test_greedy_generation_equals_hf(hf_pair, rng):
    hf, ours = hf_pair
    prompt = rng.integers(0, 61, size=(2, 3))
    ours_out = ours.generate(prompt, 20, temperature=0)  # 23 tokens > block_size 16: the window slides
    ref = hf.generate(torch.tensor(prompt), attention_mask=torch.ones(2, 3, dtype=torch.long),
                      max_new_tokens=13, do_sample=False, pad_token_id=0).numpy()
    np.testing.assert_array_equal(ours_out[:, :16], ref)  # HF stops at n_positions
    assert ours_out.shape == (2, 23)


def test_kv_cache_generation_equals_recomputing_the_window(hf_pair, rng):
    _, ours = hf_pair
    prompt = rng.integers(0, 61, size=(1, 2))
    out = ours.generate(prompt, 25, temperature=0)
    tokens = prompt
    for _ in range(25):  # no cache: full forward over the last block_size tokens each time
        logits, _ = ours(tokens[:, -16:])
        tokens = np.concatenate([tokens, to_numpy(logits)[:, -1].argmax(-1)[:, None]], axis=1)
    np.testing.assert_array_equal(out, tokens)


def test_model_files_hold_no_second_cached_forward():
    """transformers' shape: one forward per block, given the cache; no cached_* copy of any layer."""
    import inspect
    import lora_np.models.gpt2
    import lora_np.models.llama
    for module in (lora_np.models.gpt2, lora_np.models.llama):
        assert "def cached_" not in inspect.getsource(module)


def test_sampled_generation_is_reproducible_and_respects_top_k():
    model = GPT(GPTConfig(vocab_size=30, block_size=8, n_layer=1, n_head=2, n_embd=8))
    lora_np.manual_seed(5)
    a = model.generate(np.zeros((2, 1), dtype=np.int64), 10, temperature=1.5, top_k=3)
    lora_np.manual_seed(5)
    b = model.generate(np.zeros((2, 1), dtype=np.int64), 10, temperature=1.5, top_k=3)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (2, 11) and a.min() >= 0 and a.max() < 30
    lora_np.manual_seed(1)
    one = model.generate(np.zeros((1, 1), dtype=np.int64), 5, top_k=1)
    np.testing.assert_array_equal(one, model.generate(np.zeros((1, 1), dtype=np.int64), 5, temperature=0))


@pytest.mark.parametrize("kwargs,match", [
    (dict(n_embd=10, n_head=3), "divisible"), (dict(n_layer=0), "n_layer"), (dict(vocab_size=-1), "vocab_size"),
    (dict(dropout=1.0), "dropout"), (dict(block_size=2.5), "block_size")])
def test_bad_configs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GPTConfig(**{**dict(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=8), **kwargs})


def test_bad_token_ids():
    model = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=8))
    with pytest.raises(ValueError, match=r"sequence length 9 .*block_size=8"):
        model(np.zeros((1, 9), dtype=np.int64))
    with pytest.raises(ValueError, match=r"value 10 is outside \[0, 10\)"):
        model(np.array([[1, 10]]))
    with pytest.raises(ValueError, match=r"value -3 is outside"):
        model(np.array([[1, -3]]))
    with pytest.raises(TypeError, match="integers"):
        model(np.array([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="2-D"):
        model(np.array([1, 2]))
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate(np.zeros((1, 1), dtype=np.int64), -1)
    with pytest.raises(ValueError, match="top_k"):
        model.generate(np.zeros((1, 1), dtype=np.int64), 2, top_k=11)
    with pytest.raises(ValueError, match="temperature"):
        model.generate(np.zeros((1, 1), dtype=np.int64), 2, temperature=-1)


def test_idx_may_be_a_tensor_and_eval_mode_disables_dropout():
    model = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=8, dropout=0.5))
    idx = Tensor(np.array([[1, 2, 3]]))
    model.eval()
    a, _ = model(idx)
    b, _ = model(idx)
    np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    model.train()
    c, _ = model(idx)
    assert not np.allclose(to_numpy(a), to_numpy(c))
