"""Training and evaluation, for the library and the command line alike.

    result = lora_np.train(model, dataset, lora_np.TrainConfig(steps=500, lr=1e-3), out_dir="runs/x")
    metrics = lora_np.evaluate(model, dataset)      # {"loss", "token_acc"[, "answer_acc"]}

``loop.py`` holds the loop (AdamW, warmup + cosine, clipping, checkpoints, resume), ``evaluation.py``
the fixed-window evaluation, ``progress.py`` what a run prints while it works.
"""

from .evaluation import evaluate, evaluate_batches
from .loop import TrainConfig, TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train", "evaluate", "evaluate_batches"]
