"""Which family a model belongs to: from config.json's ``model_type``, or from a model or config object."""

from .gemma3_spec import GEMMA3
from .gpt2_spec import GPT2
from .llama_spec import LLAMA

FAMILIES = (GPT2, GEMMA3, LLAMA)  # a subclass's family before its base's: find_family takes the first match
MODEL_TYPES = tuple(kind for family in FAMILIES for kind in family.model_types)


def family_for_type(model_type, where="config.json"):
    """The spec whose family has this ``model_type``; a ValueError naming ``where`` and the supported ones."""
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    raise ValueError(f"{where}: model_type {model_type!r} is not supported; supported: {', '.join(MODEL_TYPES)}")


def find_family(obj):
    """The spec of a model (by its class) or of a config (by its class), or None."""
    for family in FAMILIES:
        if isinstance(obj, (family.model_class, family.config_class)):
            return family
    return None


def family_of(obj):
    """``find_family``, with a TypeError for an object of no known family."""
    family = find_family(obj)
    if family is not None:
        return family
    raise TypeError(f"{type(obj).__name__} is not a model or config of a family lora_np knows "
                    f"({', '.join(f.model_class.__name__ for f in FAMILIES)})")
