"""Stage 2, the pre-tokenizer: normalized text -> words, which the model (stage 3) encodes one by one.

Hugging Face's ``tokenizer.json`` describes it as a small JSON object; ``PreTokenizer`` reads the ones
today's small LLMs use, runs them, and writes them back:

    Split(regex, behavior "Isolated"): each match is a word and so is each gap
    Digits(individual_digits): runs of digits (or each digit) are words of their own
    ByteLevel(use_regex): with its regex, GPT-2's pattern splits as Split does; it must come last,
                    since it is where a word's UTF-8 bytes become the 256 characters
                    (``byte_level.py``) a byte-level BPE merges
    Metaspace(replacement "▁", prepend_scheme, split): spaces become "▁" (SentencePiece's marker),
                    "▁" goes before the text when the scheme says so, and with ``split`` each "▁"
                    starts a new word
    Sequence of these, each step applied to every word of the step before

No pre-tokenizer (null) keeps the text one word: Gemma's SentencePiece-style BPE works so, its
normalizer having put "▁" for every space.

Merges never cross a word, so every step only makes words smaller, and the words always join back
to the normalized text. Anything else is refused with one error that names it.
"""

import functools

import regex

GPT2_REGEX = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# Qwen2/2.5/3's and Llama 3's patterns: case-insensitive contractions (a scoped (?i:...) group),
# letters with one leading non-letter, digits one at a time (Qwen) or up to three (Llama 3), and
# newlines kept with the symbols before them. Python's ``regex`` module reads them as the Rust engines do.
QWEN_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""  # noqa: E501
LLAMA3_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""  # noqa: E501


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


def split_merged_with_previous(pattern, text):
    """Each match of ``pattern`` ends a word: "a b c" split on " " -> "a ", "b ", "c"."""
    words, last = [], 0
    for match in pattern.finditer(text):
        if match.end() > last:
            words.append(text[last:match.end()])
            last = match.end()
    if last < len(text):
        words.append(text[last:])
    return words


class PreTokenizer:
    """A list of word-splitting steps read from ``tokenizer.json``'s "pre_tokenizer" object (None: none).

    ``self(text)`` -> the words (plain strings; a byte-level model maps their bytes) the model encodes
    one by one. ``byte_level``: the steps end with ByteLevel, so the model works on bytes.
    """

    def __init__(self, spec=None):
        self.json = spec
        self.steps = _read_steps(spec) if spec is not None else []
        self.byte_level = bool(self.steps) and self.steps[-1][0] == "ByteLevel"

    @classmethod
    def gpt2(cls):
        return cls({"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True})

    @staticmethod
    def regex_then_bytes(pattern):
        """The spec of a Split(``pattern``, Isolated) then ByteLevel without its own regex (Llama 3, Qwen)."""
        return {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}

    def __call__(self, text):
        words = [text] if text else []
        for kind, split, prefix, marker in self.steps:
            if marker:
                words = [w.replace(" ", marker) for w in words]
            if prefix:
                words = [w if w.startswith(prefix) else prefix + w for w in words]
            if split is not None:
                words = [piece for w in words for piece in split(w)]
        return words


def _read_steps(spec):
    """[(kind, word -> pieces or None, prefix to add or "", what a space becomes or ""), ...] in the order
    they run."""
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind == "Sequence" and isinstance(spec.get("pretokenizers"), list):
        steps = [step for s in spec["pretokenizers"] for step in _read_steps(s)]
        if any(step[0] == "ByteLevel" for step in steps[:-1]):
            raise ValueError("pre_tokenizer: a ByteLevel step must be the last one (it turns words into bytes)")
        return steps
    if kind == "Split":
        return [("Split", _split_regex(spec), "", "")]
    if kind == "Digits":
        individual = spec.get("individual_digits", False)
        return [("Digits", _isolated(r"\p{N}" if individual else r"\p{N}+"), "", "")]
    if kind == "ByteLevel":
        split = _isolated(GPT2_REGEX) if spec.get("use_regex", True) else None
        return [("ByteLevel", split, " " if spec.get("add_prefix_space", False) else "", "")]
    if kind == "Metaspace":
        return [_metaspace(spec)]
    raise ValueError(f"pre_tokenizer {kind or spec!r:.60} is not supported: lora_np reads Split (regex, Isolated), "
                     f"ByteLevel, Digits, Metaspace and a Sequence of them")


def _metaspace(spec):
    """Metaspace: " " -> replacement; "always"/"first" prepend it; ``split``: each replacement starts a word.
    "first" is "always" here: lora_np runs the pre-tokenizer once per text between added tokens."""
    marker, scheme = spec.get("replacement", "\u2581"), spec.get("prepend_scheme", "always")
    if not (isinstance(marker, str) and len(marker) == 1) or scheme not in ("always", "first", "never"):
        raise ValueError(f"pre_tokenizer Metaspace with replacement {marker!r:.20} and prepend_scheme {scheme!r:.20} "
                         f"is not supported: lora_np reads one character and 'always', 'first' or 'never'")
    split = _isolated(f"{regex.escape(marker)}[^{regex.escape(marker)}]*") if spec.get("split", True) else None
    return ("Metaspace", split, marker if scheme != "never" else "", marker)


def _isolated(pattern):
    return functools.partial(split_isolated, regex.compile(pattern))


def _split_regex(spec):
    """Split's word -> pieces: behavior "Isolated" (a match is a word) or "MergedWithPrevious" (a match ends one)."""
    behavior, pattern = spec.get("behavior"), spec.get("pattern")
    splitters = {"Isolated": split_isolated, "MergedWithPrevious": split_merged_with_previous}
    if behavior not in splitters or spec.get("invert", False):
        raise ValueError(f"pre_tokenizer Split with behavior {behavior!r} (invert={spec.get('invert')}) is not "
                         f"supported: lora_np reads behavior 'Isolated' or 'MergedWithPrevious' without invert")
    if isinstance(pattern, dict) and isinstance(pattern.get("Regex"), str):
        try:
            compiled = regex.compile(pattern["Regex"])
        except regex.error as exc:
            raise ValueError(f"pre_tokenizer Split: the regex {pattern['Regex']!r:.60} does not compile: "
                             f"{exc}") from None
    elif isinstance(pattern, dict) and isinstance(pattern.get("String"), str) and pattern["String"]:
        compiled = regex.compile(regex.escape(pattern["String"]))
    else:
        raise ValueError(f"pre_tokenizer Split: pattern must be {{'Regex': ...}} or {{'String': ...}}; "
                         f"got {pattern!r:.60}")
    return functools.partial(splitters[behavior], compiled)
