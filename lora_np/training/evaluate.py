"""Evaluation on fixed validation windows: mean loss, token accuracy, and (where the data has
answers: a task, JSONL completions) answer accuracy.

Answer accuracy counts a run of consecutive scored targets (one answer and its newline) as right
only if every token in it is the model's top choice; with teacher forcing that is exactly the case
in which greedy decoding would write the whole answer correctly.
"""

import numpy as np

from .. import backend
from ..autograd import no_grad


def _answer_runs_correct(correct, scored):
    """(number of runs of scored positions that are entirely correct, number of runs), row by row."""
    good = total = 0
    for ok_row, s_row in zip(correct, scored):
        edges = np.flatnonzero(np.diff(np.r_[0, s_row.astype(np.int8), 0]))
        for start, end in zip(edges[::2], edges[1::2]):
            total += 1
            good += bool(ok_row[start:end].all())
    return good, total


@no_grad()
def evaluate(model, dataset, split="val", batch_size=32, n_batches=8):
    """{"loss", "token_acc"[, "answer_acc"]} over the same windows every call (model left in its mode).
    Free text has no answers, so no answer accuracy either."""
    was_training = model.training
    model.eval()
    losses, n_scored, n_correct, good, runs = [], 0, 0, 0, 0
    try:
        for x, y in dataset.fixed_batches(split, batch_size, n_batches):
            logits, loss = model(x, y)
            losses.append((loss.item(), int((y != -1).sum())))
            pred = backend.to_numpy(logits.data.argmax(axis=-1))
            scored = y != -1
            correct = (pred == y) & scored
            n_scored += int(scored.sum())
            n_correct += int(correct.sum())
            g, r = _answer_runs_correct(correct | ~scored, scored)
            good, runs = good + g, runs + r
    finally:
        model.train(was_training)
    weight = sum(n for _, n in losses)
    metrics = {"loss": sum(l * n for l, n in losses) / weight, "token_acc": n_correct / max(n_scored, 1)}
    if getattr(dataset, "has_answers", False):
        metrics["answer_acc"] = good / max(runs, 1)
    return metrics
