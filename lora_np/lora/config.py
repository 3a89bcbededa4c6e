"""LoraConfig: which layers get adapters, their rank r and scale α, DoRA and the initialisation, as in PEFT."""

import math
import re
from dataclasses import dataclass, field

from ..checks import check_int, check_number, check_probability

INIT_CHOICES = (True, "gaussian", "pissa", "olora", False)


@dataclass
class LoraConfig:
    """``r``: rank of the update ΔW = s·AᵀBᵀ; ``lora_alpha``: α, with scaling s = α/r (α/√r with
    rsLoRA); ``target_modules``: module-name suffixes ("c_attn" hits every "...attn.c_attn"), or a
    single string used as a regular expression over full names, as PEFT does, or PEFT's "all-linear"
    (every Linear layer; the output head is not one); ``lora_dropout``: dropout on the adapter's
    input; ``use_dora``: DoRA's magnitude/direction split
    (``ops/dora_linear.py``); ``init_lora_weights``: True (A Kaiming-uniform, B = 0), "gaussian"
    (A ~ N(0, 1/r²), B = 0), "pissa" (top-r SVD of W, residual left in W), "olora" (QR of W), or
    False (A and B random: for tests), as PEFT defines them (``lora/init.py``); ``modules_to_save``:
    PEFT's list of modules trained in full and saved in the adapter file, here the token embedding
    ("embed_tokens" / "wte": ``saved_embedding.py``), or None."""

    r: int = 8
    lora_alpha: float = 16
    target_modules: tuple = field(default=("c_attn",))
    lora_dropout: float = 0.0
    use_rslora: bool = False
    use_dora: bool = False
    init_lora_weights: object = True
    modules_to_save: tuple = None

    def __post_init__(self):
        check_int("LoraConfig.r", self.r, min=1)
        check_number("LoraConfig.lora_alpha", self.lora_alpha, min=0, min_open=True)
        check_probability("LoraConfig.lora_dropout", self.lora_dropout)
        for flag in ("use_rslora", "use_dora"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"LoraConfig.{flag} must be True or False; got {getattr(self, flag)!r}")
        if not any(self.init_lora_weights is c if isinstance(c, bool) else self.init_lora_weights == c
                   for c in INIT_CHOICES):
            raise ValueError(f"LoraConfig.init_lora_weights must be one of {list(INIT_CHOICES)}; "
                             f"got {self.init_lora_weights!r}")
        self.target_modules = _checked_targets(self.target_modules)
        saved = self.modules_to_save
        if saved is not None:
            if isinstance(saved, str) or not isinstance(saved, (list, tuple)) or not saved or \
                    not all(isinstance(n, str) and n for n in saved):
                raise ValueError(f"LoraConfig.modules_to_save must be None or a non-empty list of module names "
                                 f"(e.g. ['embed_tokens']); got {saved!r}")
            self.modules_to_save = tuple(saved)

    @property
    def scaling(self):
        return self.lora_alpha / (math.sqrt(self.r) if self.use_rslora else self.r)


def _checked_targets(targets):
    """A valid regular expression (one string), or a non-empty tuple of module-name suffixes (a set
    comes back sorted, so two configs with the same targets compare equal)."""
    if isinstance(targets, str):
        try:
            re.compile(targets)
        except re.error as exc:
            raise ValueError(
                f"LoraConfig.target_modules {targets!r} is not a valid regular expression: {exc}") from None
        return targets
    names = tuple(targets) if isinstance(targets, (list, tuple, set, frozenset)) else None
    if not names or not all(isinstance(t, str) and t for t in names):
        raise ValueError(f"LoraConfig.target_modules must be a non-empty list of module-name suffixes "
                         f"(or one regular expression); got {targets!r}")
    if names == ("all-linear",):  # e.g. --targets all-linear: PEFT's spelling is the string
        return "all-linear"
    return tuple(sorted(names)) if isinstance(targets, (set, frozenset)) else names
