"""Bytes as characters: the 256-letter alphabet of every byte-level BPE (GPT-2, Llama 3, Qwen).

A word's UTF-8 bytes are written as 256 printable characters (``BYTE_TO_UNICODE``: printable ASCII
and Latin-1 stand for themselves, the other 68 bytes, space and control bytes among them, move to
U+0100 onwards; a space becomes 'Ġ'). Every string is then a sequence of these characters, so a
byte-level vocabulary has no unknown token and nothing is lost. Vocabulary files (vocab.json,
tokenizer.json) store tokens in this alphabet; tiktoken rank files store the raw bytes.
"""


def bytes_to_unicode():
    """The 256 byte values -> 256 printable characters, in GPT-2's order (also their code-point order).

    Bytes that print as themselves ('!'..'~', '¡'..'¬', '®'..'ÿ') keep their code point; the
    other 68 (controls, space, soft hyphen, ...) take U+0100, U+0101, ... in byte order.
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    moved = [b for b in range(256) if b not in keep]
    table = {b: chr(b) for b in keep}
    table.update({b: chr(256 + n) for n, b in enumerate(moved)})
    return dict(sorted(table.items(), key=lambda item: ord(item[1])))


BYTE_TO_UNICODE = bytes_to_unicode()
UNICODE_TO_BYTE = {c: b for b, c in BYTE_TO_UNICODE.items()}
_BYTES_AS_CHARS = str.maketrans({chr(b): c for b, c in BYTE_TO_UNICODE.items()})


def bytes_as_chars(data):
    """b"h\\xc3\\xa9" -> "hÃ©": each byte as its character."""
    return data.decode("latin-1").translate(_BYTES_AS_CHARS)


def byte_level(word):
    """A string's UTF-8 bytes, each written as its printable character: "héllo" -> "hÃ©llo"."""
    return bytes_as_chars(word.encode("utf-8"))


def token_bytes(token):
    """The bytes a vocabulary entry stands for (an entry outside the byte alphabet: its UTF-8)."""
    if all(c in UNICODE_TO_BYTE for c in token):
        return bytes(UNICODE_TO_BYTE[c] for c in token)
    return token.encode("utf-8")
