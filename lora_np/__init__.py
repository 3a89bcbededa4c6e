"""lora_np: LoRA fine-tuning from scratch in NumPy (CuPy on a GPU), every gradient derived by hand."""

from .autograd import Parameter, Tensor, is_grad_enabled, no_grad
from .backend import get_backend, manual_seed, set_backend, to_numpy
from . import ops
from .gradcheck import GradcheckError, gradcheck

__version__ = "0.1.0"
