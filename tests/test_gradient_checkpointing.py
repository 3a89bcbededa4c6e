"""Gradient checkpointing: the same gradients as without it, bit for bit, with less held in memory.

Oracle: the same model, seed and batch run without checkpointing; checkpointing recomputes each
block's forward in the backward, so any difference (a redrawn dropout mask, a lost adapter state, a
gradient counted twice or not at all) shows up as unequal arrays. float64 models, exact equality.
"""

import tracemalloc

import numpy as np
import pytest

import lora_np
from lora_np import GPT, GPTConfig, LoraConfig, add_lora, adapter_names_per_row, to_numpy

CONFIG = dict(vocab_size=61, block_size=16, n_layer=3, n_head=2, n_embd=16)


def _gpt(dropout=0.0, dtype=np.float64):
    lora_np.manual_seed(0)
    return GPT(GPTConfig(**CONFIG, dropout=dropout), dtype=dtype)


def _batch(b=3, t=12, seed=1):
    rng = np.random.default_rng(seed)
    return rng.integers(0, CONFIG["vocab_size"], (b, t)), rng.integers(0, CONFIG["vocab_size"], (b, t))


def _loss_and_grads(model, checkpointing, step=None, seed=5):
    """Loss and every trainable parameter's gradient after one forward/backward (``step`` runs the
    forward, default ``model(idx, targets)``), with checkpointing on or off."""
    (model.gradient_checkpointing_enable if checkpointing else model.gradient_checkpointing_disable)()
    model.zero_grad()
    idx, targets = _batch()
    lora_np.manual_seed(seed)
    _, loss = model(idx, targets) if step is None else step(model, idx, targets)
    ops = [node["op"] for node in lora_np.autograd.trace_graph(loss)]
    assert ops.count("checkpoint") == (CONFIG["n_layer"] if checkpointing else 0)
    loss.backward()
    return loss.item(), {n: to_numpy(p.grad) for n, p in model.named_parameters() if p.requires_grad}


def assert_same_gradients(model, step=None):
    loss_plain, plain = _loss_and_grads(model, False, step)
    loss_ckpt, ckpt = _loss_and_grads(model, True, step)
    assert loss_ckpt == loss_plain
    assert plain.keys() == ckpt.keys() and plain
    for name in plain:
        assert plain[name] is not None and ckpt[name] is not None, name
        np.testing.assert_array_equal(ckpt[name], plain[name], err_msg=name)


def test_full_finetune_with_dropout_gives_identical_gradients():
    """Every parameter trains; dropout (embedding, attention, residual, MLP) draws the same masks
    in the recomputation as in the forward."""
    assert_same_gradients(_gpt(dropout=0.2).train())


@pytest.mark.parametrize("variant", ["lora", "dora"])
def test_lora_and_dora_with_adapter_dropout_give_identical_gradients(variant):
    model = add_lora(_gpt(dropout=0.1).train(), LoraConfig(r=2, lora_alpha=4, lora_dropout=0.3, target_modules=[
        "c_attn", "c_fc"], use_dora=variant == "dora", init_lora_weights="gaussian"))
    assert_same_gradients(model)


def test_mixed_adapter_batch_replays_each_rows_adapter():
    """adapter_names_per_row holds only for the forward's duration: the recomputation in the backward
    (outside the ``with``) must still route each row through its adapter."""
    model = add_lora(_gpt().train(), LoraConfig(r=2, target_modules=["c_attn"], init_lora_weights="gaussian"))
    add_lora(model, LoraConfig(r=3, target_modules=["c_attn", "c_proj"], init_lora_weights="gaussian"),
             adapter_name="other")

    def step(m, idx, targets):
        with adapter_names_per_row(m, ["default", "other", "__base__"]):
            return m(idx, targets)

    assert_same_gradients(model, step)


def test_quantized_base_gives_identical_gradients():
    """QLoRA: an NF4 base (double quantization), LoRA on c_attn, float32 as QLoRA trains."""
    model = lora_np.quantize_model(_gpt(dtype=np.float32), "nf4", block_size=16).train()
    add_lora(model, LoraConfig(r=2, target_modules=["c_attn"], lora_dropout=0.2, init_lora_weights="gaussian"))
    assert_same_gradients(model)


def test_long_context_uses_memory_efficient_attention():
    """With the flash kernels (forced at this small T) the checkpointed gradients are still identical."""
    from lora_np.ops.attention import memory_efficient_attention
    with memory_efficient_attention():   # the model passes no flash_min_t: the scoped default
        assert_same_gradients(add_lora(_gpt().train(), LoraConfig(r=2, init_lora_weights="gaussian")))


def test_eval_mode_and_no_grad_run_blocks_as_usual():
    model = _gpt(dropout=0.2).gradient_checkpointing_enable()
    assert model.is_gradient_checkpointing
    idx, targets = _batch()
    model.eval()
    _, loss = model(idx, targets)
    ops = {node["op"] for node in lora_np.autograd.trace_graph(loss)}
    assert "checkpoint" not in ops and "layer_norm" in ops   # eval with grad on: the full graph
    with lora_np.no_grad():
        logits_ckpt, _ = model(idx)
    model.gradient_checkpointing_disable()
    assert not model.is_gradient_checkpointing
    with lora_np.no_grad():
        logits_plain, _ = model(idx)
    np.testing.assert_array_equal(to_numpy(logits_ckpt), to_numpy(logits_plain))


def test_checkpointing_holds_less_memory():
    """tracemalloc peak of a LoRA step's forward + backward: the blocks' activations are not all
    held at once."""
    if lora_np.get_backend() != "numpy":
        pytest.skip("tracemalloc sees host allocations only")
    lora_np.manual_seed(0)
    model = add_lora(GPT(GPTConfig(vocab_size=64, block_size=128, n_layer=6, n_head=4, n_embd=64)).train(),
                     LoraConfig(r=2, init_lora_weights="gaussian"))
    idx, targets = (np.random.default_rng(0).integers(0, 64, (4, 128)) for _ in range(2))
    peaks = {}
    for checkpointing in (False, True):
        (model.gradient_checkpointing_enable if checkpointing else model.gradient_checkpointing_disable)()
        tracemalloc.start()
        model(idx, targets)[1].backward()
        peaks[checkpointing] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peaks[True] < 0.5 * peaks[False], peaks


def test_bad_input_is_refused_before_any_work():
    model = _gpt().gradient_checkpointing_enable()
    with pytest.raises(ValueError, match="block_size=16"):
        model(np.zeros((1, 17), dtype=np.int64))
    with pytest.raises(ValueError, match="supports_gradient_checkpointing"):
        lora_np.nn.Linear(3, 4).gradient_checkpointing_enable()


@pytest.mark.parametrize("qk_norm", [False, True], ids=["llama", "qwen3"])
def test_llama_decoder_layers_give_identical_gradients(qk_norm):
    """Llama-family layers take (x, cos, sin): the rotary tables pass through the recomputation as
    they are; grouped-query attention, LoRA with dropout on every Linear."""
    from lora_np import Llama, LlamaConfig
    lora_np.manual_seed(0)
    config = LlamaConfig(vocab_size=CONFIG["vocab_size"], hidden_size=16, intermediate_size=24, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16, qk_norm=qk_norm)
    model = add_lora(Llama(config, dtype=np.float64).train(),
                     LoraConfig(r=2, lora_dropout=0.3, target_modules="all-linear", init_lora_weights="gaussian"))
    assert_same_gradients(model)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(np.zeros((1, 17), dtype=np.int64))


def test_cli_flag_turns_checkpointing_on(tmp_path, monkeypatch):
    """``--gradient-checkpointing`` reaches the model that ``lora_np.train`` trains; without it, off."""
    import lora_np.app.commands as commands
    from lora_np.app.cli import main
    seen = []
    real_train = commands.train

    def spy(model, *args, **kwargs):
        seen.append(model.is_gradient_checkpointing)
        return real_train(model, *args, **kwargs)

    monkeypatch.setattr(commands, "train", spy)
    data = tmp_path / "data.txt"
    data.write_text("the quick brown fox jumps over the lazy dog. " * 60)
    for i, flag in enumerate((["--gradient-checkpointing"], [])):
        main(["pretrain", "--data", str(data), "--out", str(tmp_path / f"run{i}"), "--steps", "2", "--n-layer", "2",
              "--n-embd", "16", "--n-head", "2", "--block-size", "16", "--batch-size", "2", "--quiet", *flag])
    assert seen == [True, False]
