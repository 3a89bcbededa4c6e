"""lora_np: LoRA fine-tuning from scratch in NumPy (CuPy on a GPU), every gradient derived by hand."""

from . import nn, ops, optim
from .autograd import Parameter, Tensor, is_grad_enabled, no_grad
from .backend import get_backend, manual_seed, set_backend, to_numpy
from .gpt2_checkpoint import load_gpt2, save_gpt2
from .gradcheck import GradcheckError, gradcheck
from .model import GPT, GPTConfig

__version__ = "0.1.0"
