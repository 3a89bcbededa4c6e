"""Tiny character-level tasks that share a vocabulary but differ in their rule.

    copy     "cafe>cafe\n"      task A: the base model learns to repeat the letters before '>'
    shift    "cafe>dbgf\n"      task B: each letter moves one along the alphabet (h wraps to a)
    reverse  "cafe>efac\n"      a harder task B: the letters backwards

Same prompts, same vocabulary, a different answer: after fine-tuning on B, a model that forgot A
shows it at once (its loss on A jumps), and a model that kept A intact (LoRA with the adapter
switched off) does not. Only the answer characters and the closing newline count in the loss;
the prompt letters are random and could not be predicted anyway.
"""

import numpy as np

LETTERS = "abcdefgh"
VOCAB = LETTERS + ">\n"
_SHIFT = str.maketrans(LETTERS, LETTERS[1:] + LETTERS[0])
TASKS = {"copy": lambda s: s, "reverse": lambda s: s[::-1], "shift": lambda s: s.translate(_SHIFT)}


def check_task(name):
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; tasks: {', '.join(TASKS)}")
    return name


def make_lines(task, n_lines, seed, min_len=3, max_len=6):
    """``n_lines`` lines "prompt>answer\\n" from a seeded generator (the same seed, the same lines)."""
    rule = TASKS[check_task(task)]
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(n_lines):
        prompt = "".join(rng.choice(list(LETTERS), size=int(rng.integers(min_len, max_len + 1))))
        lines.append(f"{prompt}>{rule(prompt)}\n")
    return lines


def answer_mask(line):
    """True for each character of ``line`` that is predictable: the answer and the newline."""
    split = line.index(">")
    return [False] * (split + 1) + [True] * (len(line) - split - 1)
