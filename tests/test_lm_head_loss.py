"""The fused, chunked LM head + cross-entropy (lora_np/ops/lm_head_loss.py).

Oracles: central differences in float64 (gradcheck), the unfused path ``cross_entropy(h @ Wᵀ)``,
PyTorch's ``F.cross_entropy(h @ W.T)``, and tracemalloc for the memory claim.
"""

import tracemalloc

import numpy as np
import pytest

from lora_np import Tensor, gradcheck, no_grad, ops, to_numpy
from lora_np.ops.lm_head_loss import lm_head_loss, vocab_block

from helpers import assert_close, leaf, torch_leaf

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _targets(rng, shape, vocab, n_ignored=2):
    t = rng.integers(0, vocab, size=shape)
    t.reshape(-1)[1:1 + n_ignored] = -1
    return t


def test_vocab_block():
    assert vocab_block(512, 4) == (4 << 20) // (512 * 4) == 2048
    assert vocab_block(1024, 8, tile_bytes=1) == 64


@pytest.mark.parametrize("shape", [(20, 6), (3, 7, 6)], ids=["rows", "batch-time"])
def test_gradcheck_float64_over_several_chunks_and_blocks(shape, rng):
    """8 rows per chunk (three chunks, the last one short), 3 vocabulary columns per block (the
    running max rescales the sums from block to block), large logits so that it matters."""
    vocab = 11
    h, w = leaf(rng, *shape), leaf(rng, vocab, shape[-1])
    w.data *= 3
    targets = _targets(rng, shape[:-1], vocab)
    assert gradcheck(lambda a, b: lm_head_loss(a, b, targets, rows_per_chunk=8, block=3), [h, w])


@pytest.mark.parametrize("vocab", [13, 9000], ids=["small-vocab", "several-blocks"])
def test_equals_unfused_path_and_torch(vocab, rng):
    h, w = leaf(rng, 2, 23, 8), leaf(rng, vocab, 8)
    targets = _targets(rng, (2, 23), vocab)
    loss = lm_head_loss(h, w, targets, rows_per_chunk=10, block=None if vocab < 100 else 1000)
    (3.0 * loss).backward()

    h2, w2 = Tensor(to_numpy(h), requires_grad=True), Tensor(to_numpy(w), requires_grad=True)
    unfused = ops.cross_entropy(ops.matmul(h2, w2.T), targets)
    (3.0 * unfused).backward()
    assert_close(loss, to_numpy(unfused))
    assert_close(h.grad, to_numpy(h2.grad))
    assert_close(w.grad, to_numpy(w2.grad))

    th, tw = torch_leaf(h), torch_leaf(w)
    tloss = F.cross_entropy((th @ tw.T).reshape(-1, vocab), torch.tensor(targets.reshape(-1)), ignore_index=-1)
    (3.0 * tloss).backward()
    assert_close(loss, tloss)
    assert_close(h.grad, th.grad)
    assert_close(w.grad, tw.grad)


def test_float32_matches_torch(rng):
    vocab = 9000
    h = Tensor(rng.standard_normal((64, 32)).astype(np.float32), requires_grad=True)
    w = Tensor((0.3 * rng.standard_normal((vocab, 32))).astype(np.float32), requires_grad=True)
    targets = _targets(rng, (64,), vocab)
    loss = lm_head_loss(h, w, targets)
    loss.backward()
    th, tw = torch_leaf(h), torch_leaf(w)
    tloss = F.cross_entropy(th @ tw.T, torch.tensor(targets), ignore_index=-1)
    tloss.backward()
    assert loss.dtype == np.float32
    assert_close(loss, tloss, rtol=1e-5, atol=1e-6)
    assert_close(h.grad, th.grad, rtol=1e-4, atol=1e-7)
    assert_close(w.grad, tw.grad, rtol=1e-4, atol=1e-7)


def test_frozen_embedding_gets_no_gradient(rng):
    """Under LoRA the embedding is frozen: no dW, and h still gets its gradient."""
    h, w = leaf(rng, 9, 5), Tensor(rng.standard_normal((7, 5)))
    loss = lm_head_loss(h, w, rng.integers(0, 7, size=9))
    loss.backward()
    assert w.grad is None and h.grad is not None and np.isfinite(to_numpy(h.grad)).all()


def test_no_grad_records_nothing_and_gives_the_same_loss(rng):
    h, w = leaf(rng, 9, 5), leaf(rng, 7, 5)
    targets = rng.integers(0, 7, size=9)
    with no_grad():
        quiet = lm_head_loss(h, w, targets)
    assert not quiet.requires_grad
    assert quiet.item() == pytest.approx(lm_head_loss(h, w, targets).item(), rel=1e-13)


def test_huge_logits_stay_finite():
    h = Tensor(np.array([[1e3, 0.0], [0.0, -1e3]], dtype=np.float32), requires_grad=True)
    w = Tensor(np.array([[10.0, 0.0], [0.0, 10.0], [-10.0, 0.0]], dtype=np.float32))
    loss = lm_head_loss(h, w, np.array([2, 1]))
    loss.backward()
    # logits [1e4, 0, -1e4] -> 2e4 for target 2; [0, -1e4, 0] -> log 2 + 1e4 for target 1
    np.testing.assert_allclose(loss.item(), (2e4 + 1e4 + np.log(2)) / 2, rtol=1e-6)
    assert np.isfinite(to_numpy(h.grad)).all()


def test_never_holds_the_whole_logits(backend_name, rng):
    """Peak traced memory of forward + backward stays far below one (N, V) array of logits."""
    if backend_name != "numpy":
        pytest.skip("tracemalloc sees host (NumPy) allocations only")
    n, vocab, width = 256, 16384, 16
    h = Tensor(rng.standard_normal((n, width)).astype(np.float32), requires_grad=True)
    w = Tensor(rng.standard_normal((vocab, width)).astype(np.float32))
    targets = rng.integers(0, vocab, size=n)
    full_logits = n * vocab * 4  # 16 MiB
    tracemalloc.start()
    try:
        lm_head_loss(h, w, targets, block=512).backward()
        _, fused_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        ops.cross_entropy(ops.matmul(h, w.T), targets).backward()
        _, unfused_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert unfused_peak > full_logits
    assert fused_peak < full_logits / 4


def test_bad_input(rng):
    h, w = leaf(rng, 4, 5), leaf(rng, 7, 5)
    with pytest.raises(ValueError, match=r"do not fit the embedding of shape \(7, 6\)"):
        lm_head_loss(h, leaf(rng, 7, 6), np.zeros(4, dtype=np.int64))
    with pytest.raises(TypeError, match="float32"):
        lm_head_loss(h, Tensor(np.zeros((7, 5), dtype=np.float32)), np.zeros(4, dtype=np.int64))
    with pytest.raises(ValueError, match=r"7.*\[0, 7\)"):
        lm_head_loss(h, w, np.array([0, 1, 7, 2]))
    with pytest.raises(ValueError, match="4 rows"):
        lm_head_loss(h, w, np.array([0, 1]))
    with pytest.raises(ValueError, match="ignore_index"):
        lm_head_loss(h, w, np.array([-1, -1, -1, -1]))


def test_gpt_trains_through_the_fused_head_and_lora_leaves_the_embedding_alone(rng):
    """GPT.forward with targets: the loss equals cross_entropy of ``model(idx)``'s logits; under LoRA
    the tied embedding (and every frozen weight) gets no gradient."""
    from lora_np import GPT, GPTConfig, LoraConfig, add_lora
    model = add_lora(GPT(GPTConfig(vocab_size=37, block_size=8, n_layer=1, n_head=2, n_embd=8), dtype=np.float64),
                     LoraConfig(r=2, target_modules=["c_attn"]))
    idx = rng.integers(0, 37, size=(3, 9))
    logits, loss = model(idx[:, :-1], idx[:, 1:])
    assert logits is None
    with no_grad():
        full_logits, _ = model(idx[:, :-1])
    assert_close(loss, to_numpy(ops.cross_entropy(full_logits, idx[:, 1:])))
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert grads["transformer.wte.weight"] is None
    assert all((g is None) == ("lora_" not in n) for n, g in grads.items())
