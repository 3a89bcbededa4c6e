"""lora_np: LoRA fine-tuning from scratch in NumPy (CuPy on a GPU), every gradient derived by hand."""

from . import distributed, nn, ops, optim
from .autograd import Parameter, Tensor, is_grad_enabled, no_grad
from .backend import get_backend, manual_seed, set_backend, to_numpy
from .io.gpt2_checkpoint import load_gpt2, save_gpt2
from .io.hf_checkpoint import load_model, save_model
from .gradcheck import GradcheckError, gradcheck
from .lora import (LoraConfig, LoraEmbedding, LoraLinear, adapter_names_per_row, add_lora, add_weighted_adapter,
                   count_parameters, delete_adapter, disable_lora, load_adapter, lora_state_dict, merge_and_unload,
                   merge_lora, print_trainable_parameters, save_adapter, set_adapter, unmerge_lora)
from .models import GPT, Gemma3, Gemma3Config, GPTConfig, Llama, LlamaConfig
from .quant import QuantLinear, dequantize_model, is_quantized, quantize_model
from .tokenizer import BPETokenizer, load_tokenizer
from .training import TrainConfig, TrainResult, evaluate, train

__version__ = "0.1.0"

__all__ = [
    "Tensor", "Parameter", "no_grad", "is_grad_enabled", "gradcheck", "GradcheckError",
    "set_backend", "get_backend", "manual_seed", "to_numpy", "nn", "ops", "optim", "distributed",
    "GPT", "GPTConfig", "save_gpt2", "load_gpt2", "Llama", "LlamaConfig", "Gemma3", "Gemma3Config", "load_model",
    "save_model", "BPETokenizer", "load_tokenizer",
    "LoraConfig", "LoraLinear", "add_lora", "set_adapter", "delete_adapter", "merge_lora", "unmerge_lora",
    "merge_and_unload", "disable_lora", "lora_state_dict", "print_trainable_parameters", "count_parameters",
    "save_adapter", "load_adapter", "LoraEmbedding", "add_weighted_adapter", "adapter_names_per_row",
    "QuantLinear", "quantize_model", "dequantize_model", "is_quantized",
    "TrainConfig", "TrainResult", "train", "evaluate",
]
