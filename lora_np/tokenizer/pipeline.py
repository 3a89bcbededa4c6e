"""The text side of a byte-level BPE: a normalizer, then a pre-tokenizer that cuts text into words.

Hugging Face's ``tokenizer.json`` describes both as small JSON objects; these classes read the ones
today's small LLMs use, run them, and write them back:

    normalizer      NFC (Unicode canonical composition: "e" + U+0301 -> "é"), or a Sequence of NFC
    pre-tokenizer   Split(regex, behavior "Isolated"): each match is a word and so is each gap
                    Digits(individual_digits): runs of digits (or each digit) are words of their own
                    ByteLevel(use_regex): with its regex, GPT-2's pattern splits as Split does; it
                    must come last, since it is where a word's UTF-8 bytes become the 256 characters
                    (``bpe.byte_level``) the BPE model merges
                    Sequence of these, each step applied to every word of the step before

Merges never cross a word, so every step only makes words smaller, and the words always join back
to the normalized text. Anything else is refused with one error that names it.
"""

import unicodedata

import regex

GPT2_REGEX = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# Qwen2/2.5/3's and Llama 3's patterns: case-insensitive contractions (a scoped (?i:...) group),
# letters with one leading non-letter, digits one at a time (Qwen) or up to three (Llama 3), and
# newlines kept with the symbols before them. Python's ``regex`` module reads them as the Rust engines do.
QWEN_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
LLAMA3_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""


def split_isolated(pattern, text):
    """Every match of ``pattern`` is a word, and so is every non-empty gap between matches.

    GPT-2-like patterns match all of the text, so ``findall`` already partitions it (the fast path);
    otherwise the gaps are filled in from ``finditer``.
    """
    words = [w for w in pattern.findall(text) if w]
    if sum(map(len, words)) == len(text):
        return words
    words, last = [], 0
    for match in pattern.finditer(text):
        start, end = match.span()
        if start > last:
            words.append(text[last:start])
        if end > start:
            words.append(text[start:end])
        last = max(last, end)
    if last < len(text):
        words.append(text[last:])
    return words


class Normalizer:
    """NFC or nothing; ``json`` is the object it was read from (None: no normalizer)."""

    def __init__(self, spec=None):
        self.json = spec
        self.nfc = _normalizer_steps(spec, "normalizer") > 0

    def __call__(self, text):
        return unicodedata.normalize("NFC", text) if self.nfc else text


def _normalizer_steps(spec, where):
    if spec is None:
        return 0
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind == "NFC":
        return 1
    if kind == "Sequence" and isinstance(spec.get("normalizers"), list):
        return sum(_normalizer_steps(s, where) for s in spec["normalizers"])
    raise ValueError(f"{where} {kind or spec!r:.60} is not supported: lora_np reads NFC and a Sequence of NFC")


class PreTokenizer:
    """A list of word-splitting steps read from ``tokenizer.json``'s "pre_tokenizer" object.

    ``self(text)`` -> the words (plain strings, not yet byte-mapped) the BPE model encodes one by one.
    """

    def __init__(self, spec):
        self.json = spec
        self.steps = _read_steps(spec)
        if not self.steps or self.steps[-1][0] != "ByteLevel":
            raise ValueError("pre_tokenizer: lora_np's BPE is byte-level, so the pre-tokenizer must end with a "
                             "ByteLevel step (a character-level BPE, e.g. with byte_fallback, is not supported)")

    @classmethod
    def gpt2(cls):
        return cls({"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True})

    def __call__(self, text):
        words = [text] if text else []
        for kind, pattern, prefix_space in self.steps:
            if prefix_space:
                words = [w if w.startswith(" ") else " " + w for w in words]
            if pattern is not None:
                words = [piece for w in words for piece in split_isolated(pattern, w)]
        return words


def _read_steps(spec):
    """[(kind, compiled regex or None, add a prefix space?), ...] in the order they run."""
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind == "Sequence" and isinstance(spec.get("pretokenizers"), list):
        steps = [step for s in spec["pretokenizers"] for step in _read_steps(s)]
        if any(k == "ByteLevel" for k, _, _ in steps[:-1]):
            raise ValueError("pre_tokenizer: a ByteLevel step must be the last one (it turns words into bytes)")
        return steps
    if kind == "Split":
        return [("Split", _split_regex(spec), False)]
    if kind == "Digits":
        individual = spec.get("individual_digits", False)
        return [("Digits", regex.compile(r"\p{N}" if individual else r"\p{N}+"), False)]
    if kind == "ByteLevel":
        pattern = regex.compile(GPT2_REGEX) if spec.get("use_regex", True) else None
        return [("ByteLevel", pattern, bool(spec.get("add_prefix_space", False)))]
    raise ValueError(f"pre_tokenizer {kind or spec!r:.60} is not supported: lora_np reads Split (regex, Isolated), "
                     f"ByteLevel, Digits and a Sequence of them")


def _split_regex(spec):
    behavior, pattern = spec.get("behavior"), spec.get("pattern")
    if behavior != "Isolated" or spec.get("invert", False):
        raise ValueError(f"pre_tokenizer Split with behavior {behavior!r} (invert={spec.get('invert')}) is not "
                         f"supported: lora_np reads behavior 'Isolated' without invert")
    if isinstance(pattern, dict) and isinstance(pattern.get("Regex"), str):
        try:
            return regex.compile(pattern["Regex"])
        except regex.error as exc:
            raise ValueError(f"pre_tokenizer Split: the regex {pattern['Regex']!r:.60} does not compile: {exc}") from None
    if isinstance(pattern, dict) and isinstance(pattern.get("String"), str):
        return regex.compile(regex.escape(pattern["String"]))
    raise ValueError(f"pre_tokenizer Split: pattern must be {{'Regex': ...}} or {{'String': ...}}; got {pattern!r:.60}")
