"""Moved to lora_np.training (public as lora_np.evaluate); kept while notebooks move."""

from ..training import evaluate

__all__ = ["evaluate"]
