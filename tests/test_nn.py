"""Module: registration, names, modes, dtype casts, and state dicts that check before they write."""

import numpy as np
import pytest

from lora_np import GPT, GPTConfig, Tensor, to_numpy
from lora_np.nn import Dropout, Embedding, LayerNorm, Linear, Module, ModuleList


class TwoLayer(Module):
    def __init__(self):
        super().__init__()
        self.fc = Linear(3, 4)
        self.blocks = ModuleList([LayerNorm(4), Linear(4, 2, bias=False)])
        self.drop = Dropout(0.5)

    def forward(self, x):
        return self.blocks[1](self.blocks[0](self.drop(self.fc(x))))


def test_named_parameters_modules_and_layouts():
    m = TwoLayer()
    assert [n for n, _ in m.named_parameters()] == [
        "fc.weight", "fc.bias", "blocks.0.weight", "blocks.0.bias", "blocks.1.weight"]
    assert m.fc.weight.shape == (3, 4)  # Conv1D layout (in, out)
    assert [n for n, _ in m.named_modules()] == ["", "fc", "blocks", "blocks.0", "blocks.1", "drop"]
    assert Embedding(5, 3).weight.shape == (5, 3)


def test_forgetting_super_init_is_a_clear_error():
    class Bad(Module):
        def __init__(self):
            self.w = 1

    with pytest.raises(RuntimeError, match="super"):
        Bad()


def test_train_eval_to_and_zero_grad():
    m = TwoLayer()
    assert m.eval() is m and not m.drop.training and not m.blocks[0].training
    assert m.train().drop.training
    x = Tensor(np.ones((2, 3), dtype=np.float32))
    m(x).sum().backward()
    assert m.fc.weight.grad is not None
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())
    assert m.to(np.float64) is m and all(p.dtype == np.float64 for p in m.parameters())
    with pytest.raises(TypeError, match="floating"):
        m.to(np.int32)


def test_tied_weights_are_listed_once():
    m = TwoLayer()
    m.tied = m.fc  # the same module under a second name
    assert len(m.parameters()) == 5


def test_state_dict_round_trip_and_host_copies():
    a, b = TwoLayer(), TwoLayer()
    sd = a.state_dict()
    assert all(type(v) is np.ndarray for v in sd.values())
    b.load_state_dict(sd)
    for (_, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(to_numpy(pa), to_numpy(pb))
    sd["fc.weight"][:] = 7  # a copy: the model is unchanged
    assert not np.any(to_numpy(a.fc.weight) == 7)


def test_load_state_dict_with_a_wrong_shape_changes_nothing():
    m = TwoLayer()
    before = m.state_dict()
    bad = dict(before, **{"fc.bias": np.zeros(4), "blocks.1.weight": np.zeros((2, 4))})
    bad["fc.bias"] = np.full(4, 9.0)  # a valid entry that comes first...
    with pytest.raises(ValueError, match=r"blocks.1.weight.*\(2, 4\).*\(4, 2\)"):
        m.load_state_dict(bad)  # ...and an invalid one: nothing may be written
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_load_state_dict_missing_and_unexpected_keys():
    m = TwoLayer()
    sd = m.state_dict()
    del sd["fc.bias"]
    sd["extra"] = np.zeros(1)
    with pytest.raises(ValueError, match=r"missing keys \['fc.bias'\].*unexpected keys \['extra'\]"):
        m.load_state_dict(sd)
    missing, unexpected = m.load_state_dict(sd, strict=False)
    assert missing == ["fc.bias"] and unexpected == ["extra"]


def test_gpt_state_dict_keys_are_gpt2_names():
    model = GPT(GPTConfig(vocab_size=11, block_size=4, n_layer=1, n_head=1, n_embd=4))
    assert "transformer.h.0.attn.c_attn.weight" in model.state_dict()
    assert "lm_head.weight" not in model.state_dict()  # tied to wte
