"""Evaluation on fixed validation windows: mean loss, token accuracy, and (where the data has
answers: a task, JSONL completions) answer accuracy.

Windows stream through the model in micro-batches whose logits (b, T, V) stay within
``LOGITS_BYTES``, so memory is bounded whatever the batch size: at GPT-2's vocabulary and context
one window's logits alone are 206 MB.

Answer accuracy counts a run of consecutive scored targets (one answer and its newline) as right
only if every token in it is the model's top choice; with teacher forcing that is exactly the case
in which greedy decoding would write the whole answer correctly.
"""

import time

import numpy as np

from .. import backend
from ..autograd import no_grad
from .progress import Progress

LOGITS_BYTES = 64 << 20


def micro_batch(batch_size, block_size, vocab_size, itemsize=4):
    """Windows per forward pass: as many as keep the logits within LOGITS_BYTES (at least one)."""
    return max(1, min(batch_size, LOGITS_BYTES // (block_size * vocab_size * itemsize)))


def _answer_runs_correct(correct, scored):
    """(number of runs of scored positions that are entirely correct, number of runs), row by row."""
    good = total = 0
    for ok_row, s_row in zip(correct, scored):
        edges = np.flatnonzero(np.diff(np.r_[0, s_row.astype(np.int8), 0]))
        for start, end in zip(edges[::2], edges[1::2]):
            total += 1
            good += bool(ok_row[start:end].all())
    return good, total


class _Tally:
    """Sums over micro-batches: loss × scored targets, scored and correct targets, answer runs."""

    def __init__(self):
        self.loss_sum, self.scored, self.correct, self.good, self.runs = 0.0, 0, 0, 0, 0

    def add(self, logits, loss, y):
        scored = y != -1
        correct = (backend.to_numpy(logits.data.argmax(axis=-1)) == y) & scored
        self.loss_sum += loss.item() * int(scored.sum())
        self.scored += int(scored.sum())
        self.correct += int(correct.sum())
        good, runs = _answer_runs_correct(correct | ~scored, scored)
        self.good, self.runs = self.good + good, self.runs + runs

    def metrics(self, has_answers):
        out = {"loss": self.loss_sum / max(self.scored, 1), "token_acc": self.correct / max(self.scored, 1)}
        if has_answers:
            out["answer_acc"] = self.good / max(self.runs, 1)
        return out


def evaluate(model, dataset, split="val", batch_size=32, n_batches=8, progress=False):
    """{"loss", "token_acc"[, "answer_acc"]} over the same windows every call (model left in its mode):
    ``n_batches`` batches of windows evenly spaced over ``split``. Free text has no answers, so no
    answer accuracy either. ``progress``: a bar (or, off a terminal, a line every 30 s) while it works."""
    return evaluate_batches(model, dataset.fixed_batches(split, batch_size, n_batches),
                            getattr(dataset, "has_answers", False), progress)


def evaluate_batches(model, batches, has_answers=False, progress=False):
    """The metrics of ``evaluate`` over given (x, y) batches: the loss is the mean over every scored
    target (y != -1) of all of them, so windows that score each token once (``stride_windows``,
    packed records) give the data's exact per-token loss, whatever the batches' sizes."""
    was_training = model.training
    model.eval()
    tally = _Tally()
    bar = Progress(len(batches), 0, not progress, 30.0, unit="batch")
    try:
        with no_grad():
            for x, y in batches:
                start = time.perf_counter()
                step = micro_batch(len(x), x.shape[1], model.config.vocab_size, model.dtype.itemsize)
                for lo in range(0, len(x), step):
                    xb, yb = x[lo:lo + step], y[lo:lo + step]
                    if (yb != -1).any():
                        tally.add(*model(xb, yb), yb)
                bar.update(tally.loss_sum / max(tally.scored, 1), 1000 * (time.perf_counter() - start))
    finally:
        bar.close()
        model.train(was_training)
    return tally.metrics(has_answers)
