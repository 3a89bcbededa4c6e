"""Stage 4, the post-processor: the special tokens put around one encoded text, when
``encode(..., add_special_tokens=True)`` asks (transformers' default). ``tokenizer.json`` names it:

    ByteLevel              adds nothing (offsets only)
    TemplateProcessing     "single": [SpecialToken, Sequence A, SpecialToken ...]: Llama 3's and Gemma's bos
    Sequence of these      each one's tokens around the text, in order

Its tokens are resolved to ids when the tokenizer is built, so a template naming a token that the
vocabulary lacks is refused there.
"""


class PostProcessor:
    """``prefix`` and ``suffix`` ids; ``json`` is the object it was read from (None: none)."""

    def __init__(self, spec, token_to_id):
        self.json = spec
        self.prefix, self.suffix = _ids(spec, token_to_id)

    def __call__(self, ids):
        return [*self.prefix, *ids, *self.suffix] if self.prefix or self.suffix else ids


def _ids(spec, token_to_id):
    """(prefix ids, suffix ids) of one sequence."""
    kind = spec.get("type") if isinstance(spec, dict) else spec
    if spec is None or kind == "ByteLevel":
        return [], []
    if kind == "Sequence" and isinstance(spec.get("processors"), list):
        parts = [_ids(s, token_to_id) for s in spec["processors"]]
        return [i for p, _ in parts for i in p], [i for _, s in reversed(parts) for i in s]
    if kind == "TemplateProcessing" and isinstance(spec.get("single"), list):
        return _template_ids(spec, token_to_id)
    raise ValueError(f"post_processor {kind!r:.60} is not supported: lora_np reads ByteLevel, TemplateProcessing "
                     f"and a Sequence of them")


def _template_ids(spec, token_to_id):
    prefix, suffix, seen_text = [], [], False
    for item in spec["single"]:
        if "Sequence" in item:
            seen_text = True
            continue
        name = item.get("SpecialToken", {}).get("id")
        known = (spec.get("special_tokens") or {}).get(name, {}).get("ids")
        ids = known if known is not None else [token_to_id(name)]
        if name is None or None in ids:
            raise ValueError(f"post_processor TemplateProcessing: {item!r:.60} names no token of this vocabulary")
        (suffix if seen_text else prefix).extend(ids)
    return prefix, suffix
