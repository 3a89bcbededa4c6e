"""Check for notebook 08 (GPT-2's byte-level BPE): one merge step."""

import functools

from lora_np.tokenizer.bpe import apply_merges

from . import ExerciseFailed, exercise

CASES = [
    (["l", "o", "w", "e", "r"], ("l", "o")),
    (["a", "a", "a", "a", "a"], ("a", "a")),          # overlapping occurrences: left to right
    (["Ġ", "t", "h", "e", "Ġ", "t", "h"], ("Ġ", "t")),  # every occurrence, not just the first
    (["a", "b", "a"], ("b", "b")),                     # absent: nothing changes
    (["x"], ("x", "x")),
]


def _first_only(solution):
    """A plausible wrong answer: merge only the first occurrence."""
    @functools.wraps(solution)
    def wrong(symbols, pair):
        for i in range(len(symbols) - 1):
            if (symbols[i], symbols[i + 1]) == tuple(pair):
                return symbols[:i] + [symbols[i] + symbols[i + 1]] + symbols[i + 2:]
        return list(symbols)
    return wrong


@exercise(mutate=_first_only)
def merge_pair(fn):
    for symbols, pair in CASES:
        expected = apply_merges(list(symbols), {pair: 0})  # the tokenizer's own loop, with one ranked pair
        got = fn(list(symbols), pair)
        if list(got) != expected:
            raise ExerciseFailed(f"merge_pair({symbols}, {pair}) gave {got}; expected {expected}")
    return f"{len(CASES)} cases, overlapping and repeated pairs included"
