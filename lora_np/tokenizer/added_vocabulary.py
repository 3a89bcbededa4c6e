"""The added vocabulary: control strings such as "<|im_start|>" cut out of the text before any stage runs.

Each added token maps to its id directly. A *special* one is matched only with
``encode(text, allow_special=True)`` (a chat template's own markers); by default its literal text is
ordinary text, so user data cannot forge a document separator or a turn boundary. Non-special added
tokens ("<think>", Gemma's runs of newlines) always match. Matching is leftmost-longest, as
``tokenizers`` matches.
"""

import re


class AddedVocabulary:
    """[{"id", "content", "special"}, ...] checked against the model's ``vocab``; ``split(text, allow_special)``."""

    def __init__(self, added, vocab, source="vocab"):
        self.tokens = check_added(added, vocab, source)
        self.ids = {t["content"]: t["id"] for t in self.tokens}
        self.special_ids = {t["id"] for t in self.tokens if t["special"]}
        self._pattern = {allow: _alternation([t["content"] for t in self.tokens if allow or not t["special"]])
                         for allow in (False, True)}

    def split(self, text, allow_special):
        """(start, text, None) for ordinary text, (start, content, id) for an added token, in order."""
        pattern = self._pattern[bool(allow_special)]
        parts = pattern.split(text) if pattern is not None else [text]
        start = 0
        for i, part in enumerate(parts):
            if part:
                yield start, part, (self.ids[part] if i % 2 else None)
            start += len(part)


def _alternation(contents):
    """One regex matching any of ``contents``, longest first (leftmost-longest, as tokenizers matches)."""
    if not contents:
        return None
    return re.compile("(" + "|".join(re.escape(c) for c in sorted(contents, key=len, reverse=True)) + ")")


def check_added(added, vocab, source):
    """[{"id", "content", "special"}]: a new id past the vocabulary, or the id its content has in it."""
    out, seen = [], {}
    for t in added:
        if not (isinstance(t, dict) and type(t.get("id")) is int and t["id"] >= 0
                and isinstance(t.get("content"), str) and t["content"]):
            raise ValueError(f"{source}: an added token needs an int 'id' >= 0 and a non-empty 'content'; "
                             f"got {t!r:.80}")
        content, i = t["content"], t["id"]
        if (i < len(vocab) and vocab.get(content) != i) or (content in vocab and vocab[content] != i):
            raise ValueError(f"{source}: added token {content!r} has id {i}, which the vocabulary gives another token")
        if seen.setdefault(i, content) != content:
            raise ValueError(f"{source}: added tokens {seen[i]!r} and {content!r} share id {i}")
        out.append({"id": i, "content": content, "special": bool(t.get("special", False))})
    return out
