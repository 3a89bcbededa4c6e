"""Mixed-adapter batches: one adapter per row, as PEFT's ``model(..., adapter_names=[...])``.

    logits, _ = model(idx, adapter_names=["task_a", "__base__", "task_b", "task_a"])

Row i runs with adapter ``adapter_names[i]`` ("__base__": no adapter), and its result equals running
that row alone with that adapter active. Each adapted layer splits its input by adapter, runs each
group through ``forward_with(x_group, name)`` (the same code a single-adapter forward runs, so DoRA
and the embedding LoRA come along), and puts the rows back in their order: a gather, a concatenate
and a permutation, whose backward passes are those of ``getitem`` and ``concatenate``. A layer
that lacks an adapter runs those rows through its base, as in PEFT.
"""

import contextlib

import numpy as np

from .. import ops
from ..autograd import Tensor
from .adapters import adapter_names as model_adapter_names
from .adapters import lora_layers

BASE = "__base__"


def _row_groups(names):
    """[(name, host row indices)] in first-seen order, and the permutation that undoes the grouping."""
    order = list(dict.fromkeys(names))
    groups = [(name, np.array([i for i, n in enumerate(names) if n == name])) for name in order]
    inverse = np.argsort(np.concatenate([rows for _, rows in groups]), kind="stable")
    return groups, inverse


def _take_rows(x, rows):
    return ops.getitem(x, rows) if isinstance(x, Tensor) else x[rows]


def mixed_forward(layer, x, groups, inverse):
    """The layer's output with each group of rows through its own adapter, rows in their first order."""
    if len(groups) == 1:
        name = groups[0][0]
        return layer.forward_with(x, name if name in layer.adapter_names() else None)
    parts = [layer.forward_with(_take_rows(x, rows), name if name in layer.adapter_names() else None)
             for name, rows in groups]
    return ops.getitem(ops.concatenate(parts, axis=0), inverse)


def _check_names(model, names, batch):
    if isinstance(names, str) or not isinstance(names, (list, tuple)):
        raise TypeError(f"adapter_names must be a list of adapter names, one per row; got {type(names).__name__}")
    if len(names) != batch:
        raise ValueError(f"adapter_names has {len(names)} entries for a batch of {batch} rows; give one per row")
    known = model_adapter_names(model)
    unknown = sorted({n for n in names if n != BASE and n not in known}, key=str)
    if unknown:
        raise ValueError(f"adapter_names names {unknown}, which this model does not have; adapters: {known} "
                         f"(or {BASE!r} for the base model)")
    if any(layer.merged_adapter is not None for _, layer in lora_layers(model)):
        raise ValueError("adapter_names cannot be used while an adapter is merged; call unmerge_lora(model) first")


@contextlib.contextmanager
def adapter_names_per_row(model, idx, names):
    """Inside the block, every adapted layer of ``model`` runs row i with adapter ``names[i]``."""
    batch = len(idx.data if isinstance(idx, Tensor) else idx)
    _check_names(model, names, batch)
    groups, inverse = _row_groups(list(names))
    groups = [(None if name == BASE else name, rows) for name, rows in groups]
    layers = [layer for _, layer in lora_layers(model)]
    for layer in layers:
        layer.row_groups = (groups, inverse)
    try:
        yield model
    finally:
        for layer in layers:
            layer.row_groups = None
