"""Optimizers (SGD, AdamW), global-norm gradient clipping, the warmup+cosine schedule and LoRA+ groups."""

from .adamw import AdamW
from .clip import clip_grad_norm_
from .loraplus import loraplus_param_groups
from .optimizer import Optimizer
from .schedule import WarmupCosine, cosine_with_warmup
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "AdamW", "clip_grad_norm_", "cosine_with_warmup", "WarmupCosine",
           "loraplus_param_groups"]
