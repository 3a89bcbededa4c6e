"""Optimizers (SGD, AdamW), global-norm gradient clipping and the warmup+cosine schedule."""

from .adamw import AdamW
from .clip import clip_grad_norm_
from .optimizer import Optimizer
from .schedule import WarmupCosine, cosine_with_warmup
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "AdamW", "clip_grad_norm_", "cosine_with_warmup", "WarmupCosine"]
