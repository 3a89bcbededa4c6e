"""Mixed-adapter batches: one adapter per row, PEFT's ``adapter_names``, for any model.

    with adapter_names_per_row(model, ["task_a", "__base__", "task_b", "task_a"]):
        logits, _ = model(idx)                         # or model.generate(idx, 20), a training step...

Row i runs with adapter ``names[i]`` ("__base__": no adapter), and its result equals running that
row alone with that adapter active. The model itself knows nothing of this: inside the block every
adapted layer splits its input by adapter (``AdaptedLayer.forward_rows`` in ``layer.py``), runs each
group through ``forward_with(x_group, name)`` (the same code a single-adapter forward runs, so DoRA
and the embedding LoRA come along) and puts the rows back in their order. A layer that lacks an
adapter runs those rows through its base, as in PEFT. So a model gets mixed batches without any code
of its own: GPT-2, and any other model whose Linear layers ``add_lora`` wrapped, as long as each
adapted layer sees the batch on its first axis.
"""

import contextlib

import numpy as np

from .adapters import adapter_names as model_adapter_names
from .adapters import lora_layers

BASE = "__base__"


def _row_groups(names):
    """[(name, host row indices)] in first-seen order ("__base__" as None), and the permutation that
    undoes the grouping."""
    order = list(dict.fromkeys(names))
    groups = [(name, np.array([i for i, n in enumerate(names) if n == name])) for name in order]
    inverse = np.argsort(np.concatenate([rows for _, rows in groups]), kind="stable")
    return [(None if name == BASE else name, rows) for name, rows in groups], inverse


def _check_names(model, names):
    if isinstance(names, str) or not isinstance(names, (list, tuple)):
        raise TypeError(f"adapter_names must be a list of adapter names, one per row; got {type(names).__name__}")
    known = model_adapter_names(model)
    unknown = sorted({n for n in names if n != BASE and n not in known}, key=str)
    if unknown:
        raise ValueError(f"adapter_names names {unknown}, which this model does not have; adapters: {known} "
                         f"(or {BASE!r} for the base model)")
    if any(layer.merged_adapter is not None for _, layer in lora_layers(model)):
        raise ValueError("adapter_names cannot be used while an adapter is merged; call unmerge_lora(model) first")


@contextlib.contextmanager
def adapter_names_per_row(model, names):
    """Inside the block, every adapted layer of ``model`` runs row i with adapter ``names[i]``; a batch
    of another size than ``len(names)`` is a ValueError at the first adapted layer."""
    _check_names(model, names)
    row_groups = _row_groups(list(names))
    layers = [layer for _, layer in lora_layers(model)]
    for layer in layers:
        layer.row_groups = row_groups
    try:
        yield model
    finally:
        for layer in layers:
            layer.row_groups = None
