"""LoRA: configs, the adapted layers (Linear with plain LoRA or DoRA, the token embedding), model-level
operations, mixed-adapter batches, adapter arithmetic, PEFT-compatible files and the PiSSA/OLoRA ->
plain LoRA conversion for saving."""

from .adapters import (active_adapter, adapter_names, add_lora, count_parameters, delete_adapter, disable_lora,
                       linear_kinds, lora_layers, lora_state_dict, merge_and_unload, merge_lora,
                       print_trainable_parameters, set_adapter, unmerge_lora)
from .config import LoraConfig
from .conversion import as_plain_lora, initial_factors
from .embedding import LoraEmbedding
from .files import load_adapter, save_adapter
from .layer import LoraLinear
from .mixed import adapter_names_per_row
from .weighted import add_weighted_adapter

__all__ = ["LoraConfig", "LoraLinear", "LoraEmbedding", "add_lora", "set_adapter", "delete_adapter", "merge_lora",
           "unmerge_lora", "merge_and_unload", "disable_lora", "lora_state_dict", "print_trainable_parameters",
           "count_parameters", "save_adapter", "load_adapter", "lora_layers", "linear_kinds", "adapter_names",
           "active_adapter", "add_weighted_adapter", "adapter_names_per_row", "initial_factors", "as_plain_lora"]
