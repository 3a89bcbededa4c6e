"""Moved to lora_np.training (public as lora_np.train, lora_np.TrainConfig); kept while notebooks move."""

from ..training import TrainConfig, TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train"]
