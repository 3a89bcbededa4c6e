"""``ModelFamily``: everything the rest of lora_np needs to know about one model family, in one place.

io/ (checkpoint folders, GGUF), lora/ (PEFT files) and app/ (the CLI, its memory estimate) read a
family's spec instead of testing which class a model is; ``registry.py`` finds the spec from
config.json's ``model_type`` or from a model (or config) object. Adding a family is adding its
model file and one spec beside it (``gpt2_spec.py``, ``llama_spec.py``), then naming it in the registry.
"""

from dataclasses import dataclass
from math import prod

import numpy as np


@dataclass(frozen=True)
class Sizes:
    """A config's sizes under one set of names, whatever the family calls them."""

    vocab_size: int
    context: int  # positions the model can attend over (block_size, max_position_embeddings)
    layers: int
    width: int    # the residual stream's width (n_embd, hidden_size)
    heads: int    # query heads per layer


@dataclass(frozen=True)
class ModelFamily:
    """One family's spec. The functions take the family's config dataclass.

    ``tensor_shapes(config)``: Hugging Face tensor name -> shape as Hugging Face stores it, for every
    tensor of a checkpoint (a tied LM head is not one); lora_np's parameters have the same names,
    and the same shapes except Linear weights when ``fan_in_fan_out`` is False (``model_shapes``).
    ``fan_in_fan_out``: whether Hugging Face stores Linear weights (in, out), as GPT-2's Conv1D does,
    like lora_np; PEFT's adapter_config.json field of that name. ``linear_weights``: the name endings
    of the Linear weights. ``gguf_architectures``: model_type -> llama.cpp's general.architecture."""

    name: str
    model_types: tuple
    model_class: type
    config_class: type
    config_from_hf: object   # (config.json dict, path named in errors) -> config
    config_to_hf: object     # (config, dtype) -> config.json dict
    tensor_shapes: object    # config -> {tensor name: shape in Hugging Face's files}
    sizes: object            # config -> Sizes
    fan_in_fan_out: bool
    linear_weights: tuple
    lora_targets: tuple      # PEFT's default target_modules for the family
    gguf_architectures: dict

    def is_linear_weight(self, name):
        return name.endswith(self.linear_weights)

    def model_shapes(self, config):
        """lora_np parameter name -> shape: Hugging Face's, with Linear weights (in, out)."""
        flip = not self.fan_in_fan_out
        return {name: tuple(reversed(shape)) if flip and self.is_linear_weight(name) else shape
                for name, shape in self.tensor_shapes(config).items()}

    def parameter_count(self, config):
        """The model's parameters, from its config alone (nothing built)."""
        return sum(prod(shape) for shape in self.tensor_shapes(config).values())

    def gguf_architecture(self, config):
        return self.gguf_architectures[getattr(config, "model_type", self.name)]


def dtype_name(dtype):
    """config.json's name of a weights dtype: a NumPy dtype's name, or "bfloat16" (which NumPy lacks)."""
    return dtype if dtype == "bfloat16" else str(np.dtype(dtype))
