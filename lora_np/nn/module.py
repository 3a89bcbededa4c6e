"""``Module``: a tree of named parameters and sub-modules, as in PyTorch.

Assigning a Parameter or a Module to an attribute registers it under that name, so names compose
into dotted paths ("transformer.h.0.attn.c_attn.weight") that match GPT-2 checkpoints one-to-one.
"""

import numpy as np

from .. import backend, parallel
from ..autograd import Parameter, is_grad_enabled
from .checkpointing import checkpoint


class Module:
    """Base class: subclasses call ``super().__init__()`` first, then assign parameters and children.

    A class that sets ``supports_gradient_checkpointing = True`` (a transformer block) may have its
    forward recomputed in the backward instead of keeping its activations: see
    :meth:`gradient_checkpointing_enable` and ``nn/checkpointing.py``.
    """

    supports_gradient_checkpointing = False

    def __init__(self):
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}.__init__ must call super().__init__() before assigning {name!r}")
        params, modules = self._parameters, self._modules
        if isinstance(value, Parameter):
            modules.pop(name, None)
            params[name] = value  # replacing keeps the position, so names keep their order
        elif isinstance(value, Module):
            params.pop(name, None)
            modules[name] = value
        else:
            params.pop(name, None)
            modules.pop(name, None)
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        object.__delattr__(self, name)

    def __call__(self, *args, **kwargs):
        # BLAS on one thread, set once for the whole forward (not switched per op, nor per module)
        if self.__dict__.get("gradient_checkpointing") and self.training and is_grad_enabled():
            return parallel.on_one_blas_thread(checkpoint, self, *args, **kwargs)
        return parallel.on_one_blas_thread(self.forward, *args, **kwargs)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} defines no forward()")

    # --- walking the tree ----------------------------------------------------------------------
    def named_modules(self, prefix=""):
        """(dotted name, module) for this module and every descendant, depth first."""
        stack = [(prefix, self)]
        while stack:
            name, module = stack.pop()
            yield name, module
            children = [(f"{name}.{n}" if name else n, m) for n, m in module._modules.items()]
            stack.extend(reversed(children))

    def named_parameters(self):
        """(dotted name, Parameter), each parameter once (a tied weight under its first name)."""
        seen = set()
        for module_name, module in self.named_modules():
            for name, p in module._parameters.items():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield (f"{module_name}.{name}" if module_name else name), p

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def children(self):
        return list(self._modules.values())

    # --- modes, dtype, gradients -----------------------------------------------------------------
    def train(self, mode=True):
        for _, m in self.named_modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self):
        return self.train(False)

    def to(self, dtype):
        """Cast every parameter to ``dtype`` (float32 or float64) in place; returns self."""
        dtype = np.dtype(dtype)
        if dtype.kind != "f":
            raise TypeError(f"Module.to: parameters must stay floating point; got {dtype}")
        for p in self.parameters():
            p.data = p.data.astype(dtype, copy=False)
            p.grad = None
        return self

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def requires_grad_(self, requires_grad=True):
        for p in self.parameters():
            p.requires_grad = requires_grad
        return self

    # --- gradient checkpointing (transformers' names) --------------------------------------------
    def gradient_checkpointing_enable(self):
        """Every submodule whose class supports it (each transformer block) keeps only its input in
        training and runs its forward again in the backward: activation memory of one block instead
        of all of them, for about a third more arithmetic; gradients unchanged (dropout masks are
        replayed). In eval mode, or under ``no_grad``, blocks run as usual. Returns self."""
        blocks = [m for _, m in self.named_modules() if m.supports_gradient_checkpointing]
        if not blocks:
            raise ValueError(f"gradient checkpointing: {type(self).__name__} has no submodule that supports it "
                             f"(a block class sets supports_gradient_checkpointing = True)")
        for m in blocks:
            object.__setattr__(m, "gradient_checkpointing", True)
        return self

    def gradient_checkpointing_disable(self):
        """Every block keeps its activations again (the default). Returns self."""
        for _, m in self.named_modules():
            m.__dict__.pop("gradient_checkpointing", None)
        return self

    @property
    def is_gradient_checkpointing(self):
        """True when some submodule recomputes its forward in the backward."""
        return any(m.__dict__.get("gradient_checkpointing") for _, m in self.named_modules())

    # --- state dicts -----------------------------------------------------------------------------
    def state_dict(self):
        """name -> host NumPy copy of every parameter."""
        return {name: backend.to_numpy(p.data) for name, p in self.named_parameters()}

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays into the parameters of the same names, casting to each parameter's dtype.

        Every name and shape is checked before anything is written, so a failed load changes
        nothing. A value may also be a file's ``StoredTensor`` (``io.safetensors_file``), read only
        when its turn comes, so a checkpoint is never held whole beside the model. ``strict``:
        missing or unexpected names are errors. Returns (missing, unexpected).
        """
        params = dict(self.named_parameters())
        missing = sorted(set(params) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(params))
        if strict and (missing or unexpected):
            raise ValueError(f"load_state_dict: missing keys {missing[:8]}{'...' if len(missing) > 8 else ''}, "
                             f"unexpected keys {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}")
        staged = {}
        for name, value in state_dict.items():
            if name not in params:
                continue
            shape = tuple(getattr(value, "shape", np.shape(value)))
            if shape != params[name].shape:
                raise ValueError(f"load_state_dict: {name} has shape {shape} in the state dict, "
                                 f"{params[name].shape} in the model")
            array = value.data if hasattr(value, "requires_grad") else value
            if np.dtype(getattr(array, "dtype", np.float64)).kind not in "fiu":
                raise TypeError(f"load_state_dict: {name} has non-numeric dtype {array.dtype}")
            staged[name] = array
        for name, array in staged.items():  # a StoredTensor is read here, one at a time
            p = params[name]
            if hasattr(array, "read"):  # a host buffer of its own: kept (no second copy) unless cast or strided
                p.data = backend.asarray(np.ascontiguousarray(array.read(), dtype=p.dtype))
            else:
                p.data = backend.xp.array(array, dtype=p.dtype)
            p.grad = None
        return missing, unexpected

    def __repr__(self):
        lines = [f"({n}): {repr(m)}".replace("\n", "\n  ") for n, m in self._modules.items()]
        inner = "".join(f"\n  {line}" for line in lines)
        return f"{type(self).__name__}({self.extra_repr()}{inner}{chr(10) if inner else ''})"

    def extra_repr(self):
        return ""
