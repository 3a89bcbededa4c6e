"""Adapter arithmetic: a new adapter from a weighted combination of existing ones, as PEFT's
``add_weighted_adapter`` (linear, cat and svd), on every layer that holds at least one of them.

With adapters i of factors A_i (r_i, in), B_i (out, r_i), scalings s_i and weights w_i:

    "cat"     A = [w_1 s_1 A_1; w_2 s_2 A_2; ...],  B = [B_1, B_2, ...]   rank Σ r_i, exactly Σ w_i ΔW_i
    "linear"  A = Σ sign(w_i s_i) √|w_i s_i| A_i,   B = Σ √|w_i s_i| B_i   one rank r; only an
              approximation (the cross terms B_i A_j stay in), which PEFT says too
    "svd"     Δ = Σ w_i s_i B_i A_i  (out, in);  Δ ≈ U_k S_k V_kᵀ:  B = U_k S_k,  A = V_kᵀ   rank k =
              svd_rank or max r_i; ``svd_clamp`` = q clips U_k S_k and V_kᵀ to ± the q-quantile of their entries

The new adapter gets r = lora_alpha = its rank (scaling 1, or √r with rsLoRA, as PEFT's copy of the
first adapter's config gives), the union of the targets, and is added inactive. The svd factors
equal PEFT's up to the sign of each singular pair (which SVD leaves free); their product is the same.
"""

import dataclasses
import math
import numbers

from .. import backend
from .adapters import (_add_adapter_layers, _refresh_trainable, _refuse_if_merged, _target_layers, adapter_names,
                       lora_layers, set_adapter)

COMBINATIONS = ("svd", "linear", "cat")


def _check(model, adapters, weights, adapter_name, combination_type):
    known = adapter_names(model)
    if isinstance(adapters, str) or not isinstance(adapters, (list, tuple)) or not adapters:
        raise ValueError(f"adapters must be a non-empty list of adapter names; got {adapters!r}; adapters: {known}")
    missing = [a for a in adapters if a not in known]
    if missing:
        raise ValueError(f"no adapter named {missing}; adapters: {known}")
    if not isinstance(weights, (list, tuple)) or len(weights) != len(adapters):
        raise ValueError(f"weights must be a list with one number per adapter: {len(adapters)} adapters "
                         f"{list(adapters)}, got weights {weights!r}")
    if not all(isinstance(w, numbers.Real) and not isinstance(w, bool) and math.isfinite(w) for w in weights):
        raise ValueError(f"weights must be finite numbers; got {weights!r}")
    if combination_type not in COMBINATIONS:
        raise ValueError(f"combination_type must be one of {list(COMBINATIONS)}; got {combination_type!r}")
    if adapter_name in known:
        raise ValueError(f"adapter {adapter_name!r} already exists on this model; adapters: {known}")
    dora = [a for a in adapters if model.peft_config[a].use_dora]
    if dora:
        raise ValueError(f"add_weighted_adapter combines plain LoRA adapters; {dora} use DoRA, whose magnitude "
                         f"vectors have no weighted sum")
    _refuse_if_merged(model, "add_weighted_adapter")


def _new_config(model, adapters, combination_type, svd_rank):
    configs = [model.peft_config[a] for a in adapters]
    ranks = {a: c.r for a, c in zip(adapters, configs)}
    if combination_type == "linear":
        if len(set(ranks.values())) != 1:
            raise ValueError(f"combination_type='linear' needs adapters of one rank; got ranks {ranks}: use 'cat' "
                             f"or 'svd' to combine different ranks")
        rank = configs[0].r
    elif combination_type == "cat":
        rank = sum(ranks.values())
    else:
        rank = svd_rank or max(ranks.values())
    kinds = {isinstance(c.target_modules, str) for c in configs}
    if len(kinds) > 1:
        raise ValueError("the adapters' target_modules mix lists and regular expressions; PEFT refuses that too")
    if kinds == {True}:
        targets = "|".join(f"({c.target_modules})" for c in configs)
    else:
        targets = tuple(sorted(set().union(*(c.target_modules for c in configs))))
    return dataclasses.replace(configs[0], r=rank, lora_alpha=rank, target_modules=targets,
                               init_lora_weights=True, use_dora=False)


def _svd_factors(layer, present, weights, rank, clamp, full_matrices):
    """PEFT's _svd_generalized_task_arithmetic_weighted_adapter for combination "svd", in float64."""
    xp = backend.xp
    delta = sum(w * layer.delta_weight(a).T.astype("float64") for a, w in zip(present, weights))  # (out, in)
    u, s, vh = xp.linalg.svd(xp.ascontiguousarray(delta), full_matrices=full_matrices)
    u = u[:, :rank] * s[:rank][None, :]
    vh = vh[:rank, :]
    if clamp is not None:
        hi = xp.quantile(xp.concatenate([u.reshape(-1), vh.reshape(-1)]), clamp)
        u, vh = xp.clip(u, -hi, hi), xp.clip(vh, -hi, hi)
    return vh, u


def _cat_factors(layer, present, weights, rank):
    xp = backend.xp
    a_parts, b_parts = [], []
    for adapter, w in zip(present, weights):
        a, b, s = layer.factors(adapter)
        a_parts.append(a * (w * s))
        b_parts.append(b)
    a, b = xp.concatenate(a_parts, axis=0), xp.concatenate(b_parts, axis=1)
    a_full = xp.zeros((rank, a.shape[1]), dtype=a.dtype)
    b_full = xp.zeros((b.shape[0], rank), dtype=b.dtype)
    a_full[:a.shape[0]], b_full[:, :b.shape[1]] = a, b
    return a_full, b_full


def _linear_factors(layer, present, weights):
    a_sum = b_sum = 0.0
    for adapter, w in zip(present, weights):
        a, b, s = layer.factors(adapter)
        ws = w * s
        a_sum = a_sum + math.copysign(math.sqrt(abs(ws)), ws if ws != 0 else 1.0) * a
        b_sum = b_sum + math.sqrt(abs(ws)) * b
    return a_sum, b_sum


def add_weighted_adapter(model, adapters, weights, adapter_name, combination_type="svd", svd_rank=None,
                         svd_clamp=None, svd_full_matrices=True):
    """Add ``adapter_name`` = the weighted combination of ``adapters`` (PEFT's defaults: "svd", rank =
    the largest input rank, no clamping). With one adapter the combination is "linear", as in PEFT."""
    _check(model, adapters, weights, adapter_name, combination_type)
    combination_type = "linear" if len(adapters) == 1 else combination_type
    config = _new_config(model, adapters, combination_type, svd_rank)
    chosen = _target_layers(model, config, check_rank=False)
    _add_adapter_layers(model, config, adapter_name, chosen)
    for _, layer in lora_layers(model):
        if adapter_name not in layer.adapter_names():
            continue
        pairs = [(a, w) for a, w in zip(adapters, weights) if a in layer.adapter_names()]
        present, layer_weights = [a for a, _ in pairs], [w for _, w in pairs]
        if combination_type == "cat":
            a, b = _cat_factors(layer, present, layer_weights, config.r)
        elif combination_type == "linear":
            a, b = _linear_factors(layer, present, layer_weights)
        else:
            a, b = _svd_factors(layer, present, layer_weights, config.r, svd_clamp, svd_full_matrices)
        target_a, target_b = layer.adapter_parameters(adapter_name)
        target_a.data = backend.xp.ascontiguousarray(a.astype(layer.weight.dtype))
        target_b.data = backend.xp.ascontiguousarray(b.astype(layer.weight.dtype))
    if model.active_adapter is None:
        set_adapter(model, adapter_name)
    _refresh_trainable(model)
    return model
