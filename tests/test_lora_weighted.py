"""add_weighted_adapter against PEFT's on the same adapters: factors, ΔW and logits for linear, cat, svd."""

import numpy as np
import pytest
import torch

from lora_np import add_weighted_adapter, set_adapter, to_numpy
from lora_np.lora import lora_layers
from hf_oracle import max_rel_err
from peft_oracle import add_peft_adapter, ours_from_peft_files, peft_gpt2

CASES = [  # (combination, r of task_b, targets of task_b)
    ("linear", 4, ["c_attn", "c_fc"]),
    ("cat", 2, ["c_attn", "c_fc", "wte"]),
    ("svd", 2, ["c_attn", "c_fc", "wte"]),
]


def _pair(tmp_path, r_b, targets_b, rslora=False):
    peft = peft_gpt2(tmp_path, torch.float64, targets=("c_attn", "c_proj"), r=4, alpha=8, use_rslora=rslora)
    add_peft_adapter(peft, tmp_path, "task_b", seed=2, r=r_b, lora_alpha=5, target_modules=targets_b,
                     use_rslora=rslora)
    return peft, ours_from_peft_files(tmp_path, torch.float64, names=("default", "task_b"))


def _peft_factors(theirs, name, adapter):
    if name.endswith("wte"):
        return theirs.lora_embedding_A[adapter].detach().numpy(), theirs.lora_embedding_B[adapter].detach().numpy()
    return theirs.lora_A[adapter].weight.detach().numpy(), theirs.lora_B[adapter].weight.detach().numpy()


@pytest.mark.parametrize("combination,r_b,targets_b", CASES, ids=["linear", "cat", "svd"])
def test_weighted_adapter_equals_peft_s(tmp_path, rng, combination, r_b, targets_b):
    peft, ours = _pair(tmp_path, r_b, targets_b)
    weights = [0.7, -1.3]
    peft.add_weighted_adapter(["default", "task_b"], weights, "mix", combination_type=combination)
    add_weighted_adapter(ours, ["default", "task_b"], weights, "mix", combination_type=combination)
    assert ours.peft_config["mix"].r == peft.peft_config["mix"].r
    assert ours.peft_config["mix"].scaling == peft.peft_config["mix"].lora_alpha / peft.peft_config["mix"].r
    checked = 0
    for name, layer in lora_layers(ours):
        if "mix" not in layer.adapter_names():
            continue
        theirs = peft.base_model.model.get_submodule(name)
        # PEFT: float32 weights
        assert max_rel_err(to_numpy(layer.delta_weight("mix")), theirs.get_delta_weight("mix")) < 1e-6
        a, b = (to_numpy(f) for f in layer.factors("mix")[:2])
        ta, tb = _peft_factors(theirs, name, "mix")
        if combination == "svd":  # each singular pair's sign is free, and so are the pairs of singular value 0
            signs = np.sign(np.sum(a * ta, axis=1))
            a, b = a * signs[:, None], b * signs[None, :]
            kept = np.linalg.norm(b, axis=0) > 1e-9 * np.linalg.norm(b)   # columns of U_k S_k
            a, ta, b, tb = a[kept], ta[kept], b[:, kept], tb[:, kept]
        assert max_rel_err(a, ta) < 1e-6 and max_rel_err(b, tb) < 1e-6
        checked += 1
    peft_layers = [m for m in peft.modules()
                   if "mix" in getattr(m, "lora_A", {}) or "mix" in getattr(m, "lora_embedding_A", {})]
    assert checked == len(peft_layers) == 8 + ("wte" in targets_b)
    peft.set_adapter("mix")
    set_adapter(ours, "mix")
    idx = rng.integers(0, 61, size=(2, 10))
    assert max_rel_err(to_numpy(ours(idx)[0]), peft(torch.tensor(idx)).logits) < 1e-6


def test_svd_rank_and_clamp_as_peft_defines_them(tmp_path):
    """svd_clamp=q clips both factors at ± the q-quantile of their signed entries, which depends on the
    signs the SVD picks for each singular pair: LAPACK builds differ (torch's MKL, NumPy's OpenBLAS and
    cuSOLVER flip some pairs of a rank-deficient ΔW). So each layer is checked against the closed form
    on our unclamped factors, and against PEFT's after giving our pairs PEFT's signs."""
    peft, ours = _pair(tmp_path, 2, ["c_attn", "c_proj"])
    weights, q = [0.7, -1.3], 0.9
    peft.add_weighted_adapter(["default", "task_b"], weights, "mix", combination_type="svd", svd_rank=3, svd_clamp=q)
    add_weighted_adapter(ours, ["default", "task_b"], weights, "mix", combination_type="svd", svd_rank=3, svd_clamp=q)
    add_weighted_adapter(ours, ["default", "task_b"], weights, "raw", combination_type="svd", svd_rank=3)

    def clamped(a, b):
        hi = np.quantile(np.concatenate([b.ravel(), a.ravel()]), q)
        return np.clip(a, -hi, hi), np.clip(b, -hi, hi)

    for name, layer in lora_layers(ours):
        a, b = (to_numpy(f) for f in layer.factors("mix")[:2])
        raw_a, raw_b = (to_numpy(f) for f in layer.factors("raw")[:2])
        want_a, want_b = clamped(raw_a, raw_b)
        np.testing.assert_allclose(a, want_a, rtol=1e-12)
        np.testing.assert_allclose(b, want_b, rtol=1e-12)
        ta, tb = _peft_factors(peft.base_model.model.get_submodule(name), name, "mix")
        assert a.shape == ta.shape == (3, layer.in_features)
        signs = np.sign(np.sum(raw_a * ta, axis=1))
        peft_a, peft_b = clamped(raw_a * signs[:, None], raw_b * signs[None, :])
        assert max_rel_err(peft_a, ta) < 1e-6 and max_rel_err(peft_b, tb) < 1e-6


def test_cat_is_exactly_the_weighted_sum_of_updates(tmp_path):
    _, ours = _pair(tmp_path, 2, ["c_attn"])
    add_weighted_adapter(ours, ["default", "task_b"], [2.0, 0.5], "mix", combination_type="cat")
    layer = dict(lora_layers(ours))["transformer.h.1.attn.c_attn"]
    want = 2.0 * to_numpy(layer.delta_weight("default")) + 0.5 * to_numpy(layer.delta_weight("task_b"))
    np.testing.assert_allclose(to_numpy(layer.delta_weight("mix")), want, rtol=1e-12, atol=1e-14)


def test_bad_input_names_what_is_accepted(tmp_path):
    _, ours = _pair(tmp_path, 2, ["c_attn"])
    with pytest.raises(ValueError,
                       match=r"one number per adapter: 2 adapters \['default', 'task_b'\], got weights \[1.0\]"):
        add_weighted_adapter(ours, ["default", "task_b"], [1.0], "mix")
    with pytest.raises(ValueError,
                       match=r"'linear' needs adapters of one rank; got ranks \{'default': 4, 'task_b': 2\}"):
        add_weighted_adapter(ours, ["default", "task_b"], [1.0, 1.0], "mix", combination_type="linear")
    with pytest.raises(ValueError, match=r"no adapter named \['nope'\]; adapters: \['default', 'task_b'\]"):
        add_weighted_adapter(ours, ["default", "nope"], [1.0, 1.0], "mix")
    with pytest.raises(ValueError, match=r"combination_type must be one of \['svd', 'linear', 'cat'\]; got 'ties'"):
        add_weighted_adapter(ours, ["default", "task_b"], [1.0, 1.0], "mix", combination_type="ties")
    with pytest.raises(ValueError, match="'default' already exists"):
        add_weighted_adapter(ours, ["default", "task_b"], [1.0, 1.0], "default")
    assert list(ours.peft_config) == ["default", "task_b"]
