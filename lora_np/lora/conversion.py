"""PiSSA and OLoRA adapters, saved so that they apply to the *original* base.

Those inits move the principal part of W into the factors and train on the residual
W_res = W - s·A₀ᵀB₀ᵀ, so the trained model is W_res + s·AᵀBᵀ. An adapter file is applied to the
original W, so it must hold

    ΔW = W_res + s·AᵀBᵀ - W = s·(AᵀBᵀ - A₀ᵀB₀ᵀ) = A'ᵀB'ᵀ,
    A' = [s·A; -s·A₀]  (2r, in),    B' = [B, B₀]  (out, 2r)

a plain LoRA of rank 2r and scaling 1: what PEFT's ``path_initial_model_for_weight_conversion``
writes. Any tool that applies a LoRA to the base (``generate --adapter``, ``merge``, PEFT) then
gives the trained model. ``lora_np train --init pissa`` (app/commands.py) saves its adapter this way.
"""

from .. import backend
from .adapters import add_lora, lora_layers
from .config import LoraConfig

CONVERTED_INITS = ("pissa", "olora")


def initial_factors(model, name="default"):
    """{layer name: (A₀, B₀)} right after add_lora, before training changes them."""
    return {n: tuple(f.copy() for f in layer.factors(name)[:2]) for n, layer in lora_layers(model)}


def as_plain_lora(trained, initial, original, config, name="default"):
    """Add to ``original`` (the base as loaded) a plain rank-2r adapter equal to what ``trained``
    (residual base + trained factors) learned; returns ``original``."""
    xp = backend.xp
    rank = 2 * config.r
    add_lora(original, LoraConfig(r=rank, lora_alpha=rank ** 0.5 if config.use_rslora else rank,
                                  target_modules=config.target_modules, use_rslora=config.use_rslora), name)
    layers = dict(lora_layers(trained))
    for layer_name, layer in lora_layers(original):
        a, b, s = layers[layer_name].factors(name)
        a0, b0 = initial[layer_name]
        layer.lora_A[name].weight.data = xp.concatenate([s * a, -s * a0], axis=0).astype(a.dtype)
        layer.lora_B[name].weight.data = xp.concatenate([b, b0], axis=1).astype(b.dtype)
    return original
