"""Stage 1, the normalizer: text -> text, before anything is split.

Hugging Face's ``tokenizer.json`` names it by type; lora_np reads the ones today's small LLMs use:

    NFC          Unicode canonical composition: "e" + U+0301 -> "é" (Qwen2/2.5/3)
    Replace      one literal string by another: " " -> "▁" (Gemma's SentencePiece-style space marker)
    Prepend      a string before non-empty text: "▁" (older SentencePiece-style BPEs)
    Sequence     of these, in order

Anything else is refused with one error that names it.
"""

import unicodedata


class Normalizer:
    """The steps read from a "normalizer" object; ``json`` is that object (None: no normalizer)."""

    def __init__(self, spec=None):
        self.json = spec
        self.steps = _read_steps(spec)
        # Replace of one character by one character keeps every position; NFC and Prepend do not.
        self.keeps_positions = all(kind == "Replace" and len(a) == len(b) == 1 for kind, a, b in self.steps)

    def __call__(self, text):
        for kind, a, b in self.steps:
            if kind == "NFC":
                text = unicodedata.normalize("NFC", text)
            elif kind == "Replace":
                text = text.replace(a, b)
            elif text:  # Prepend
                text = a + text
        return text

    def with_positions(self, text):
        """(normalized text, to_raw): ``to_raw[i]`` is the (start, end) in ``text`` of normalized character i.

        A normalizer that keeps positions maps character to character. Otherwise lines are normalized one
        by one (NFC never joins across a newline): an unchanged line maps character to character, a
        changed one maps each of its characters to the whole line.
        """
        normal = self(text)
        if normal == text or (self.keeps_positions and len(normal) == len(text)):
            return normal, [(i, i + 1) for i in range(len(text))]
        parts, to_raw, start = [], [], 0
        for line in text.splitlines(keepends=True):
            done = self(line)
            parts.append(done)
            same = done == line
            to_raw.extend((start + i, start + i + 1) if same else (start, start + len(line)) for i in range(len(done)))
            start += len(line)
        return "".join(parts), to_raw


def _read_steps(spec):
    """[(kind, a, b), ...] in the order they run."""
    if spec is None:
        return []
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind == "NFC":
        return [("NFC", None, None)]
    if kind == "Sequence" and isinstance(spec.get("normalizers"), list):
        return [step for s in spec["normalizers"] for step in _read_steps(s)]
    if kind == "Replace":
        pattern, content = spec.get("pattern"), spec.get("content")
        if not (isinstance(pattern, dict) and isinstance(pattern.get("String"), str) and pattern["String"]
                and isinstance(content, str)):
            raise ValueError(f"normalizer Replace {pattern!r:.60} -> {content!r:.20} is not supported: lora_np reads "
                             f"a {{'String': ...}} pattern replaced by a string")
        return [("Replace", pattern["String"], content)]
    if kind == "Prepend" and isinstance(spec.get("prepend"), str):
        return [("Prepend", spec["prepend"], None)]
    raise ValueError(f"normalizer {kind or spec!r:.60} is not supported: lora_np reads NFC, Replace (a string), "
                     f"Prepend and a Sequence of them")
