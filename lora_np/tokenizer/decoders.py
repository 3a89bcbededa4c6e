"""Stage 5, the decoder: tokens -> text. Hugging Face's ``tokenizer.json`` names it by type:

    ByteLevel       each token's characters are bytes (``byte_level.py``): GPT-2, Llama 3, Qwen, SmolLM2
    a Sequence of   Replace("▁" -> " "), ByteFallback ("<0xNN>" is byte NN), Fuse, and optionally
                    Strip(" ", 1, 0) (drop the one space a prepended "▁" became): SentencePiece-style
                    BPEs (Gemma, Llama 2)

``token_bytes(token)`` gives the bytes one token stands for; the tokenizer joins them and reads UTF-8,
so a cut inside a multi-byte character shows as U+FFFD; ``finish(text)`` applies Strip.
"""

import re

from .byte_level import token_bytes

_BYTE_TOKEN = re.compile(r"<0x([0-9A-F]{2})>")


class Decoder:
    """ByteLevel or the SentencePiece-style sequence; ``json`` is the object it was read from."""

    def __init__(self, spec):
        self.json = spec
        kinds = _kinds(spec)
        self.byte_level = kinds == ["ByteLevel"]
        self.marker, self.strip = None, 0
        if not self.byte_level:
            self.marker, self.strip = _sentencepiece(spec, kinds)

    @classmethod
    def byte_level_decoder(cls):
        return cls({"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True})

    def token_bytes(self, token):
        if self.byte_level:
            return token_bytes(token)
        byte = _BYTE_TOKEN.fullmatch(token)
        if byte:
            return bytes([int(byte.group(1), 16)])
        return token.replace(self.marker, " ").encode("utf-8")

    def word_text(self, word):
        """A model-side word as the text its tokens decode to (the marker back to a space)."""
        return word if self.byte_level else word.replace(self.marker, " ")

    def finish(self, text):
        return text[1:] if self.strip and text.startswith(" ") else text


def _kinds(spec):
    if isinstance(spec, dict) and spec.get("type") == "Sequence" and isinstance(spec.get("decoders"), list):
        return [d.get("type") if isinstance(d, dict) else d for d in spec["decoders"]]
    return [spec.get("type") if isinstance(spec, dict) else spec]


def _sentencepiece(spec, kinds):
    """(marker, spaces to strip at the start) of Sequence[Replace(marker, " "), ByteFallback, Fuse, (Strip)]."""
    steps = spec.get("decoders") if isinstance(spec, dict) else None
    replace = steps[0] if steps else {}
    marker = (replace.get("pattern") or {}).get("String") if isinstance(replace, dict) else None
    strip = steps[-1] if steps and kinds[-1] == "Strip" else {}
    ok = (kinds in (["Replace", "ByteFallback", "Fuse"], ["Replace", "ByteFallback", "Fuse", "Strip"])
          and isinstance(marker, str) and len(marker) == 1 and replace.get("content") == " "
          and strip.get("content", " ") == " " and strip.get("start", 1) in (0, 1) and strip.get("stop", 0) == 0)
    if not ok:
        raise ValueError(f"decoder {spec!r:.120} is not supported: lora_np reads ByteLevel, or a Sequence of "
                         f"Replace('▁', ' '), ByteFallback, Fuse and optionally Strip(' ', 1, 0)")
    return marker, strip.get("start", 0)
