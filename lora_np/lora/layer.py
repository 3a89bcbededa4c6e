"""LoraLinear: a frozen Linear plus named low-rank adapters (plain LoRA or DoRA), one of them active.

The base ``weight`` and ``bias`` keep their Parameters and their names, so the model's GPT-2 state
dict is unchanged; each adapter adds ``lora_A.<name>.weight`` (r, in) and ``lora_B.<name>.weight``
(out, r), PEFT's names and layouts, and a DoRA adapter also ``lora_magnitude_vector.<name>.weight``
(out,). The forward (``forward_with``) is one fused op chosen by the adapter and the base weight:
``ops/lora_linear.py`` (plain LoRA), ``ops/dora_linear.py`` (DoRA), ``quant/linear_op.py``'s
``quant_lora_linear`` (plain LoRA on a 4-bit ``QuantWeight`` base: QLoRA), and the bare base matmul
(``ops.linear`` or ``quant_linear``) with no adapter. A mixed batch (one adapter per row,
``mixed.py``) runs each group of rows through ``forward_with`` and puts the rows back in order.

Every adapted layer (this one and ``LoraEmbedding``) answers the same questions, which the
model-level functions in ``adapters.py`` ask: ``adapter_names()``, ``adapter_parameters(name)``,
``file_tensors(name)``, ``forward_with(x, name)``, ``merge()``, ``unmerge()``, ``to_base()``.
"""

from .. import ops
from ..autograd import Parameter, Tensor
from ..nn import Linear, Module, ModuleDict
from ..ops.dora_linear import dora_linear, dora_weight_norm
from ..quant.linear import QuantLinear
from ..quant.linear_op import quant_linear, quant_lora_linear
from ..quant.weight import QuantWeight
from .init import lora_factors


def _take_rows(x, rows):
    return ops.getitem(x, rows) if isinstance(x, Tensor) else x[rows]


class LoraFactor(Module):
    """One low-rank factor: a module holding ``weight``, so names read ``lora_A.default.weight``."""

    def __init__(self, weight):
        super().__init__()
        self.weight = Parameter(weight)


class AdaptedLayer(Module):
    """What LoraLinear and LoraEmbedding share: the active/merged/disabled state and the dispatch."""

    def _init_state(self, base):
        self.weight = base.weight
        self.scaling, self.r = {}, {}
        self.active_adapter = None
        self.merged_adapter = None
        self.disabled = False
        self.row_groups = None  # (groups, inverse) while mixed.adapter_names_per_row is active

    def adapter_names(self):
        return list(self.scaling)

    def delta_weight(self, name):
        """ΔW = s · Aᵀ Bᵀ in the layout of the base weight ((in, out) for a Linear, (V, C) for wte)."""
        a, b, s = self.factors(name)
        return s * (a.T @ b.T)

    def forward(self, x):
        if self.row_groups is not None and not self.disabled:
            return self.forward_rows(x, *self.row_groups)
        name = self.active_adapter
        if name is None or self.disabled or self.merged_adapter is not None:
            return self.forward_with(x, None)
        return self.forward_with(x, name)

    def forward_rows(self, x, groups, inverse):
        """Each group ``(name, rows)`` of rows through its own adapter (one this layer lacks, or None:
        the base), the rows put back in their order: a gather per group, a concatenate and the
        permutation ``inverse``, whose backward passes are those of ``getitem`` and ``concatenate``."""
        if len(x) != len(inverse):
            raise ValueError(f"adapter_names has {len(inverse)} entries for a batch of {len(x)} rows; "
                             f"give one per row")
        own = self.adapter_names()
        if len(groups) == 1:
            return self.forward_with(x, groups[0][0] if groups[0][0] in own else None)
        parts = [self.forward_with(_take_rows(x, rows), name if name in own else None) for name, rows in groups]
        return ops.getitem(ops.concatenate(parts, axis=0), inverse)


class LoraLinear(AdaptedLayer):
    def __init__(self, base):
        super().__init__()
        if not isinstance(base, Linear):
            raise TypeError(f"LoraLinear wraps a Linear; got {type(base).__name__}")
        self.in_features, self.out_features = base.in_features, base.out_features
        self._init_state(base)
        self.bias = base.bias
        self.lora_A, self.lora_B, self.lora_magnitude_vector = ModuleDict(), ModuleDict(), ModuleDict()
        self.lora_dropout = {}
        self._merged_norm = None

    @staticmethod
    def file_shapes(base, config):
        """PEFT's file keys (after the module name) and shapes for an adapter of ``config`` on ``base``."""
        shapes = {"lora_A.weight": (config.r, base.in_features), "lora_B.weight": (base.out_features, config.r)}
        if config.use_dora:
            shapes["lora_magnitude_vector"] = (base.out_features,)
        return shapes

    def add_adapter(self, name, config):
        """A and B as ``config.init_lora_weights`` says (``init.py``; PiSSA and OLoRA also rewrite W to the
        residual); with DoRA, m = ‖W + s·AᵀBᵀ‖ per output, so the adapted layer equals the base at step 0."""
        a, b, residual = lora_factors(self.weight.data, config.r, config.scaling, config.init_lora_weights)
        if residual is not None:
            self.weight.data = residual
        self.lora_A[name], self.lora_B[name] = LoraFactor(a), LoraFactor(b)
        self.scaling[name], self.r[name] = config.scaling, config.r
        self.lora_dropout[name] = config.lora_dropout
        if config.use_dora:
            self.lora_magnitude_vector[name] = LoraFactor(dora_weight_norm(self.weight.data, a, b, config.scaling)[0])

    def magnitude(self, name):
        """DoRA's magnitude m (out,) of adapter ``name``, or None for a plain LoRA adapter: the one
        place that asks whether an adapter is DoRA."""
        factor = self.lora_magnitude_vector[name] if name in self.lora_magnitude_vector else None
        return None if factor is None else factor.weight

    def delete_adapter(self, name):
        if self.magnitude(name) is not None:
            del self.lora_magnitude_vector[name]
        del self.lora_A[name], self.lora_B[name]
        del self.scaling[name], self.r[name], self.lora_dropout[name]

    def adapter_parameters(self, name):
        return list(self.file_tensors(name).values())

    def file_tensors(self, name):
        """PEFT's key suffix -> Parameter, for ``save_adapter`` and ``load_adapter``."""
        tensors = {"lora_A.weight": self.lora_A[name].weight, "lora_B.weight": self.lora_B[name].weight}
        if self.magnitude(name) is not None:
            tensors["lora_magnitude_vector"] = self.magnitude(name)
        return tensors

    def factors(self, name):
        """(A (r, in), B (out, r), s): ΔW = s·AᵀBᵀ in W's (in, out) layout."""
        return self.lora_A[name].weight.data, self.lora_B[name].weight.data, self.scaling[name]

    def merge(self):
        """W ← W + ΔW; for DoRA W ← (W + ΔW) ⊙ m/n with n = ‖W + ΔW‖ of the unmerged W, kept for unmerge."""
        name = self.active_adapter
        if self.merged_adapter is not None or name is None:
            return
        magnitude = self.magnitude(name)
        if magnitude is not None:
            norm, adapted = dora_weight_norm(self.weight.data, *self.factors(name))
            self._merged_norm = norm
            self.weight.data = adapted * (magnitude.data / norm)
        else:
            self.weight.data = self.weight.data + self.delta_weight(name)
        self.merged_adapter = name

    def unmerge(self):
        name = self.merged_adapter
        if name is None:
            return
        magnitude = self.magnitude(name)
        if magnitude is not None:
            self.weight.data = self.weight.data / (magnitude.data / self._merged_norm)
            self._merged_norm = None
        self.weight.data = self.weight.data - self.delta_weight(name)
        self.merged_adapter = None

    def to_base(self):
        """The plain layer holding this one's weight (merged or not) and bias: a QuantLinear for a
        quantized base, a Linear otherwise."""
        if isinstance(self.weight, QuantWeight):
            return QuantLinear(self.weight, self.bias)
        return Linear.from_parameters(self.weight, self.bias)

    def forward_with(self, x, name):
        """The layer with adapter ``name`` (None: the base alone), whatever is active. A quantized base
        (``QuantWeight``: QLoRA) has its own matmuls, which decode the 4-bit codes band by band."""
        quantized = isinstance(self.weight, QuantWeight)
        if name is None:
            return (quant_linear if quantized else ops.linear)(x, self.weight, self.bias)
        a, b, magnitude = self.lora_A[name].weight, self.lora_B[name].weight, self.magnitude(name)
        if magnitude is not None:  # DoRA needs the float W (add_lora refuses it on a quantized base)
            return dora_linear(x, self.weight, self.bias, a, b, magnitude, self.scaling[name], self.lora_dropout[name],
                               self.training)
        lora_linear = quant_lora_linear if quantized else ops.lora_linear
        return lora_linear(x, self.weight, self.bias, a, b, self.scaling[name], self.lora_dropout[name], self.training)

    def extra_repr(self):
        dora = f", dora={self.lora_magnitude_vector.keys()}" if len(self.lora_magnitude_vector) else ""
        return (f"in_features={self.in_features}, out_features={self.out_features}, adapters={self.lora_A.keys()}"
                f"{dora}, active={self.active_adapter!r}{', merged' if self.merged_adapter else ''}")
