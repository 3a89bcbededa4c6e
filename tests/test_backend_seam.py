"""The backend seam, tested on every run without CUDA: with a stand-in device module installed as
``xp`` (see device_standin.py), the whole library (ops, model, LoRA, optimizer, trainer, files,
generation) must compute with device arrays only; and the real CPU<->GPU consistency test, which
runs where CuPy and CUDA are present."""

import numpy as np
import pytest

import lora_np
from lora_np import GPT, GPTConfig, LoraConfig, add_lora, backend, gradcheck, ops, to_numpy
from lora_np.data import task_dataset
from lora_np.optim import AdamW, clip_grad_norm_
from lora_np import TrainConfig, train
from device_standin import DeviceArray, standin


@pytest.fixture
def device(backend_name):
    if backend_name != "numpy":
        pytest.skip("the stand-in device replaces the numpy backend")
    with backend.using(standin, "standin"):
        yield


def _assert_device(arrays, what):
    for name, a in arrays:
        assert isinstance(a, DeviceArray), f"{what} {name} is a {type(a).__name__}, not a device array"


def test_the_standin_catches_host_arrays(device):
    x = backend.xp.ones(3)
    assert isinstance(x, DeviceArray)
    with pytest.raises(TypeError, match="host numpy array"):
        x + np.ones(3)


def test_training_lora_and_full_stay_on_the_device(device, tmp_path):
    model = GPT(GPTConfig(vocab_size=10, block_size=16, n_layer=2, n_head=2, n_embd=16, dropout=0.1))
    _assert_device([(n, p.data) for n, p in model.named_parameters()], "parameter")
    data = task_dataset("copy", block_size=16, n_train=100, n_val=40)
    result = train(model, data, TrainConfig(steps=3, eval_every=3, batch_size=4), out_dir=tmp_path / "full",
                   quiet=True)
    assert result.status == "done"
    _assert_device([(n, p.data) for n, p in model.named_parameters()], "trained parameter")
    add_lora(model, LoraConfig(r=2, target_modules=["c_attn", "c_fc"], lora_dropout=0.1))
    opt = AdamW([p for p in model.parameters() if p.requires_grad])
    x, y = data.batch("train", 4, np.random.default_rng(0))
    logits, loss = model(x, y)
    loss.backward()
    clip_grad_norm_(model.parameters(), 1.0)
    _assert_device([(n, p.grad) for n, p in model.named_parameters() if p.requires_grad], "gradient")
    opt.step()
    _assert_device([(f"{i}.{k}", v) for i, s in enumerate(opt.state.values()) for k, v in s.items()
                    if hasattr(v, "shape")], "optimizer state")
    tokens = model.generate(x[:1, :4], 6, temperature=0.8, top_k=3)
    assert tokens.shape == (1, 10)


def test_files_round_trip_through_the_device(device, tmp_path):
    model = add_lora(GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=8)), LoraConfig(r=2))
    lora_np.save_gpt2(lora_np.merge_and_unload(model), tmp_path / "ckpt")
    back = lora_np.load_gpt2(tmp_path / "ckpt")
    _assert_device([(n, p.data) for n, p in back.named_parameters()], "loaded parameter")
    add_lora(back, LoraConfig(r=2))
    lora_np.save_adapter(back, tmp_path / "adapter")
    lora_np.load_adapter(back, tmp_path / "adapter", adapter_name="again")
    _assert_device([(n, p.data) for n, p in back.named_parameters()], "adapter parameter")


def test_every_op_stays_on_the_device(device):
    r = np.random.default_rng(0)

    def leaf(*shape):
        return lora_np.Tensor(r.standard_normal(shape), requires_grad=True)

    x, w, b = leaf(2, 3, 4), leaf(4, 6), leaf(6)
    outs = [ops.exp(x) * 2.0 - x / 3.0, ops.log(ops.sqrt(x * x + 1.0)), ops.tanh(x) ** 2, -x, x @ w, x.sum(axis=1),
            x.mean(), x.max(axis=-1), x.reshape(6, 4).T, x.permute(2, 0, 1), x[:, 1:, np.array([0, 0, 2])],
            ops.concatenate(ops.split(x, 2, axis=2), axis=0), ops.stack([x, x], axis=1), ops.softmax(x),
            ops.log_softmax(x), ops.layer_norm(x, leaf(4), leaf(4)), ops.gelu(x), ops.dropout(x, 0.5),
            ops.linear(x, w, b), ops.lora_linear(x, w, b, leaf(2, 4), leaf(6, 2), 0.5, 0.2),
            ops.embedding(np.array([[1, 2], [0, 1]]), w), ops.causal_self_attention(leaf(2, 5, 12), 2),
            ops.scaled_dot_product_attention(leaf(2, 5, 4), leaf(2, 5, 4), leaf(2, 5, 4), causal=False)]
    total = sum(o.sum() for o in outs) + ops.cross_entropy(leaf(3, 5), np.array([1, 0, 4]))
    total.backward()
    _assert_device([("output", o.data) for o in outs] + [("x.grad", x.grad), ("w.grad", w.grad)], "op result")
    assert gradcheck(lambda t: ops.gelu(t) * 3.0, [leaf(3, 2)])


@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-5), (np.float64, 1e-10)])
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_cpu_and_gpu_give_the_same_losses(dtype, tol, lora, backend_name):
    """Same seed, same model, same batches: the loss after a few steps agrees across backends."""
    if not backend.cupy_available():
        pytest.skip("needs CuPy and a CUDA GPU (pip install -r requirements-gpu.txt)")
    x, y = (np.random.default_rng(0).integers(0, 10, size=(2, 4, 16)),
            np.random.default_rng(1).integers(0, 10, (2, 4, 16)))

    def losses(name):
        lora_np.set_backend(name)
        lora_np.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=10, block_size=16, n_layer=2, n_head=2, n_embd=16), dtype=dtype)
        if lora:
            add_lora(model, LoraConfig(r=2))
            for p in model.parameters():
                if p.requires_grad:
                    p.data = p.data + 0.01
        opt = AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        out = []
        for step in range(4):
            _, loss = model(x[step % 2], y[step % 2])
            loss.backward()
            opt.step()
            opt.zero_grad()
            out.append(loss.item())
        return out

    cpu, gpu = losses("numpy"), losses("cupy")
    np.testing.assert_allclose(gpu, cpu, rtol=tol, atol=tol)
    lora_np.set_backend(backend_name)
    assert to_numpy(backend.xp.ones(1))[0] == 1


def test_lora_variants_and_qlora_stay_on_the_device(device, tmp_path):
    """DoRA, PiSSA, LoRA on wte, mixed-adapter batches, weighted adapters and a 4-bit base, each
    trained one step: every parameter, gradient and output stays a device array."""
    x = np.random.default_rng(0).integers(0, 10, size=(2, 8))
    cfg = GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=16)

    def one_step(model):
        _, loss = model(x, x)
        loss.backward()
        trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        _assert_device([(n, p.grad) for n, p in trained], "gradient")
        AdamW([p for _, p in trained], lr=1e-2).step()
        _assert_device([(n, p.data) for n, p in model.named_parameters()], "parameter")

    model = GPT(cfg)
    add_lora(model, LoraConfig(r=2, target_modules=["c_attn", "wte"]))
    add_lora(model, LoraConfig(r=2, target_modules=["c_attn", "c_fc"], use_dora=True), adapter_name="dora")
    add_lora(model, LoraConfig(r=2, target_modules=["c_attn"], init_lora_weights="pissa"), adapter_name="pissa")
    for name in ("default", "dora", "pissa"):
        lora_np.set_adapter(model, name)
        one_step(model)
    with lora_np.lora.adapter_names_per_row(model, ["default", "__base__"]):
        logits, _ = model(x)
    _assert_device([("mixed-batch logits", logits.data)], "output")
    lora_np.add_weighted_adapter(model, ["default", "pissa"], [0.5, 0.5], "mix", combination_type="svd")
    lora_np.set_adapter(model, "dora")
    lora_np.save_adapter(model, tmp_path / "dora")
    lora_np.merge_lora(model)
    _assert_device([(n, p.data) for n, p in model.named_parameters()], "merged parameter")

    quantized = lora_np.quantize_model(GPT(cfg), "nf4", block_size=16)
    add_lora(quantized, LoraConfig(r=2, target_modules=["c_attn", "c_proj", "c_fc"]))
    one_step(quantized)
    assert quantized.generate(x[:1, :3], 4, temperature=0).shape == (1, 7)


def test_llama_checkpointing_and_flash_attention_stay_on_the_device(device):
    """The Llama family (RMSNorm, RoPE, SwiGLU, grouped-query attention, Qwen3's q/k norms), the
    memory-efficient attention kernels and gradient checkpointing's recompute, with LoRA on every
    projection: forward, backward, an AdamW step and KV-cache generation on device arrays only."""
    config = lora_np.LlamaConfig(vocab_size=12, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, head_dim=6, qk_norm=True,
                                 max_position_embeddings=32, tie_word_embeddings=False, model_type="qwen3")
    model = lora_np.Llama(config)
    add_lora(model, LoraConfig(r=2, target_modules="all-linear", lora_dropout=0.1))
    model.gradient_checkpointing_enable()
    x = np.random.default_rng(0).integers(0, 12, size=(2, 9))
    with ops.attention.memory_efficient_attention():
        _, loss = model(x[:, :-1], x[:, 1:])
        loss.backward()
    _assert_device([(n, p.grad) for n, p in model.named_parameters() if p.requires_grad], "gradient")
    AdamW([p for p in model.parameters() if p.requires_grad]).step()
    model.eval()
    assert model.generate(x[:1, :3], 4).shape == (1, 7)
