"""The optimizer base: parameter groups, per-parameter state, zero_grad, state dicts.

State (momentum buffers, Adam moments) is created lazily, at a parameter's first step, and only for
parameters that require grad: a frozen weight never costs optimizer memory.
"""

from functools import partial

import numpy as np

from .. import backend, parallel
from ..autograd import Tensor


class Optimizer:
    def __init__(self, params, defaults):
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.param_groups = []
        for group in groups:
            members = list(group["params"])
            for p in members:
                if not isinstance(p, Tensor) or p.dtype.kind != "f":
                    raise TypeError(f"optimizer parameters must be floating-point Tensors; got {type(p).__name__}")
            self.param_groups.append({**defaults, **group, "params": members})
        self.state = {}  # Parameter -> dict of arrays and counters

    def parameters(self):
        return [p for g in self.param_groups for p in g["params"]]

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def step(self):
        """Every trained parameter's update, all handed to the threads at once (``parallel.run_tasks``;
        on this thread when they are small, as a few LoRA adapters are). The parameters smaller than
        a block (biases, norm weights) are updated in runs of about a block's size, each run one task:
        a task per bias vector would cost more to hand out than its update takes."""
        tasks, size, run, run_size = [], 0, [], 0
        for group in self.param_groups:
            for p in group["params"]:
                if p.requires_grad and p.grad is not None:
                    new = self.update_tasks(p, p.grad, group, self.state.setdefault(p, {}))
                    size += p.data.size
                    if p.data.size >= parallel.GRAIN:
                        tasks += new
                        continue
                    run += new
                    run_size += p.data.size
                    if run_size >= parallel.GRAIN:
                        tasks.append(partial(_run_in_order, run))
                        run, run_size = [], 0
        if run:
            tasks.append(partial(_run_in_order, run))
        parallel.run_tasks(tasks, size)

    def update(self, p, grad, group, state):
        """Update ``p`` in place from ``grad``: the subclass's rule."""
        parallel.run_tasks(self.update_tasks(p, grad, group, state))

    def update_tasks(self, p, grad, group, state):
        """``update``'s work as independent tasks (callables without arguments); a subclass defines
        this, or ``update`` (then its update of one parameter is one task)."""
        if type(self).update is Optimizer.update:
            raise NotImplementedError(f"{type(self).__name__} defines neither update nor update_tasks")
        return [partial(self.update, p, grad, group, state)]

    def state_bytes(self):
        """Bytes held by optimizer state (what LoRA saves: zero for frozen weights)."""
        return sum(v.nbytes for s in self.state.values() for v in s.values() if hasattr(v, "nbytes"))

    def state_dict(self):
        """{"state": {index: {name: host array or number}}, "param_groups": [hyper-parameters + indices]}."""
        index = {id(p): i for i, p in enumerate(self.parameters())}
        state = {index[id(p)]: {k: backend.to_numpy(v) if hasattr(v, "shape") else v for k, v in s.items()}
                 for p, s in self.state.items()}
        groups, start = [], 0
        for g in self.param_groups:
            groups.append({**{k: v for k, v in g.items() if k != "params"},
                           "params": list(range(start, start + len(g["params"])))})
            start += len(g["params"])
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore what state_dict() gave; shapes and group sizes are checked before anything changes."""
        params = self.parameters()
        groups = state_dict.get("param_groups", [])
        if [len(g["params"]) for g in groups] != [len(g["params"]) for g in self.param_groups]:
            raise ValueError("optimizer state_dict has a different number of parameter groups or parameters")
        new_state = {}
        for i, s in state_dict.get("state", {}).items():
            i = int(i)
            if not 0 <= i < len(params):
                raise ValueError(f"optimizer state_dict names parameter {i}; this optimizer has {len(params)}")
            p = params[i]
            entry = {}
            for k, v in s.items():
                if hasattr(v, "shape") and np.ndim(v) > 0:
                    if tuple(v.shape) != p.shape:
                        raise ValueError(f"optimizer state {k!r} of parameter {i} has shape {tuple(v.shape)}, "
                                         f"the parameter has {p.shape}")
                    entry[k] = backend.xp.array(v, dtype=p.dtype)
                else:
                    entry[k] = v.item() if hasattr(v, "item") else v
            new_state[p] = entry
        for g, saved in zip(self.param_groups, groups):
            g.update({k: v for k, v in saved.items() if k != "params"})
        self.state = new_state


def _run_in_order(tasks):
    for task in tasks:
        task()
