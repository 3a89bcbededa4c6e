"""Check for notebook 08 (GPT-2's byte-level BPE): one merge step."""

from lora_np.tokenizer.bpe import apply_merges

from . import ExerciseFailed, exercise

CASES = [
    (["l", "o", "w", "e", "r"], ("l", "o")),
    (["a", "a", "a", "a", "a"], ("a", "a")),          # overlapping occurrences: left to right
    (["Ġ", "t", "h", "e", "Ġ", "t", "h"], ("Ġ", "t")),  # every occurrence, not just the first
    (["a", "b", "a"], ("b", "b")),                     # absent: nothing changes
    (["x"], ("x", "x")),
    (["Ġt", "he", "Ġ", "the", "Ġt", "h", "e"], ("Ġt", "he")),   # symbols of several characters
    (["a", "ab", "b"], ("b", "b")),                   # "a ab b" holds "b b" as text, not as a pair of symbols
    (["ab", "c", "a", "bc"], ("ab", "c")),            # "abc" twice as text, once as the pair
]


@exercise
def merge_pair(fn):
    for symbols, pair in CASES:
        expected = apply_merges(list(symbols), {pair: 0})  # the tokenizer's own loop, with one ranked pair
        got = fn(list(symbols), pair)
        if list(got) != expected:
            raise ExerciseFailed(f"merge_pair({symbols}, {pair}) gave {got}; expected {expected}")
    return f"{len(CASES)} cases: overlapping and repeated pairs, symbols of several characters"
