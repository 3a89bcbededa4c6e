"""LoRA+ (Hayou, Ghosh & Yu 2024): a larger learning rate for B than for A.

In ΔW = s·AᵀBᵀ, B starts at zero and multiplies the features A extracts; for wide layers the
paper shows that one learning rate for both is inefficient and sets η_B = λ·η_A (λ = 16 by default,
2⁴, the paper's choice for GPT-2-size models). Here that is two AdamW parameter groups:

    opt = AdamW(loraplus_param_groups(model, lr=2e-3, ratio=16))

    lora_A, lora_embedding_A and every other trainable parameter     lr
    lora_B, lora_embedding_B, and DoRA's lora_magnitude_vector        ratio · lr

PEFT's ``create_loraplus_optimizer`` puts the magnitude vector (a 1-D parameter) with B too, but
gives a LoRA on an embedding one fixed rate (``loraplus_lr_embedding``, 1e-6) for both factors;
here the embedding's B, its output side like a Linear's B, gets ratio · lr as the paper's rule says.
"""

from ..autograd import Tensor
from ..checks import check_number

FAST_NAMES = (".lora_B.", ".lora_embedding_B.", ".lora_magnitude_vector.")


def _named_trainable(model_or_params):
    if hasattr(model_or_params, "named_parameters"):
        return [(n, p) for n, p in model_or_params.named_parameters() if p.requires_grad]
    pairs = list(model_or_params.items() if isinstance(model_or_params, dict) else model_or_params)
    if not all(isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[1], Tensor) for pair in pairs):
        raise TypeError("loraplus_param_groups needs a model, a dict name -> Parameter, or (name, Parameter) pairs "
                        "(the names tell lora_A from lora_B); got bare parameters")
    return [(n, p) for n, p in pairs if p.requires_grad]


def loraplus_param_groups(model_or_params, lr, ratio=16.0, weight_decay=0.0):
    """AdamW/SGD parameter groups: A-side parameters at ``lr``, B-side ones at ``ratio · lr``."""
    lr = check_number("lr", lr, min=0, min_open=True)
    ratio = check_number("ratio", ratio, min=0, min_open=True)
    weight_decay = check_number("weight_decay", weight_decay, min=0)
    named = _named_trainable(model_or_params)
    if not named:
        raise ValueError("loraplus_param_groups: no trainable parameter (add_lora first?)")
    fast = [p for n, p in named if any(k in "." + n + "." for k in FAST_NAMES)]
    fast_ids = {id(p) for p in fast}
    slow = [p for _, p in named if id(p) not in fast_ids]
    groups = [{"params": slow, "lr": lr, "weight_decay": weight_decay},
              {"params": fast, "lr": ratio * lr, "weight_decay": weight_decay}]
    return [g for g in groups if g["params"]]
