"""Adding, switching, merging and removing LoRA adapters on a model (PEFT's operations, as functions).

    add_lora(model, LoraConfig(r=8, target_modules=["c_attn"]))   # base frozen, A·B trainable
    merge_lora(model) / unmerge_lora(model)                        # W ← W ± s·AᵀBᵀ
    with disable_lora(model): ...                                  # exactly the base model
    add_lora(model, cfg_b, adapter_name="task_b"); set_adapter(model, "task_b")
    merge_and_unload(model)                                        # a plain model, adapters gone

The layers they act on are ``LoraLinear`` (layer.py, plain LoRA or DoRA), ``LoraEmbedding``
(embedding.py, for ``wte``) and ``SavedEmbedding`` (saved_embedding.py, PEFT's ``modules_to_save``
on the token embedding); all are ``AdaptedLayer``s with the same small interface.
"""

import contextlib
import re

from .. import backend
from ..nn import Embedding, Linear
from ..quant.table import FrozenTable
from ..quant.weight import QuantWeight
from .config import LoraConfig
from .embedding import LoraEmbedding
from .layer import AdaptedLayer, LoraLinear
from .saved_embedding import SavedEmbedding

EMBEDDING_TARGETS = ("wte", "embed_tokens")  # the table tokens are looked up in (GPT-2, Llama); wpe is sliced
ALL_LINEAR = "all-linear"  # PEFT's spelling for every Linear layer but the output head (not a Linear here)


def lora_layers(model):
    """(name, layer) for every adapted layer (LoraLinear or LoraEmbedding)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, AdaptedLayer)]


def adapter_names(model):
    return list(getattr(model, "peft_config", {}))


def active_adapter(model):
    return getattr(model, "active_adapter", None)


def _require_adapter(model, name, doing=""):
    if name not in adapter_names(model):
        raise ValueError(f"no adapter named {name!r}{doing}; adapters: {adapter_names(model)}")


def _refuse_if_merged(model, caller):
    if any(layer.merged_adapter for _, layer in lora_layers(model)):
        raise ValueError(f"{caller}: an adapter is merged into the weights; call unmerge_lora(model) first")


def linear_kinds(model):
    """The name endings of the model's Linear layers, in the order the model holds them (a Llama-family
    decoder: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj): what "every Linear layer"
    is as a list of target_modules, read from the model rather than written by hand."""
    return tuple(dict.fromkeys(n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                               if isinstance(m, (Linear, LoraLinear))))


def _matches(name, targets):
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return any(name == t or name.endswith("." + t) for t in targets)


def _parent_and_attr(model, name):
    modules = dict(model.named_modules())
    parent, _, attr = name.rpartition(".")
    return modules[parent], attr


def _layer_size(m):
    """(in, out) of a Linear, (num_embeddings, embedding_dim) of an Embedding, wrapped or not."""
    if isinstance(m, (Linear, LoraLinear)):
        return m.in_features, m.out_features
    return m.num_embeddings, m.embedding_dim


def _target_layers(model, config, check_rank=True):
    """The (name, module) pairs ``config.target_modules`` names: Linear layers, and the token embedding."""
    candidates = [(n, m) for n, m in model.named_modules()
                  if isinstance(m, (Linear, LoraLinear, Embedding, LoraEmbedding))]
    if config.target_modules == ALL_LINEAR:
        chosen = [(n, m) for n, m in candidates if isinstance(m, (Linear, LoraLinear))]
    else:
        chosen = [(n, m) for n, m in candidates if _matches(n, config.target_modules)]
    linears = [n for n, m in candidates if isinstance(m, (Linear, LoraLinear))]
    if not chosen:
        suffixes = sorted(linear_kinds(model))
        embeddings = sorted({n.rsplit(".", 1)[-1] for n, m in candidates if isinstance(m, (Embedding, LoraEmbedding))}
                            & set(EMBEDDING_TARGETS))  # only the names this model has
        raise ValueError(f"LoRA target_modules {config.target_modules!r} match no Linear layer; this model's "
                         f"Linear layers end in {suffixes} (e.g. {linears[0] if linears else 'none'})"
                         + (f", and its token embedding {embeddings[0]!r} may be targeted too" if embeddings else ""))
    for n, m in chosen:
        if isinstance(m, (Embedding, LoraEmbedding)) and n.rsplit(".", 1)[-1] not in EMBEDDING_TARGETS:
            raise ValueError(f"LoRA on an Embedding applies to the token embedding {list(EMBEDDING_TARGETS)} only; "
                             f"{n} is read by slicing its weight, not by a lookup, so an adapter would be ignored")
        size = _layer_size(m)
        if check_rank and config.r > min(size):
            raise ValueError(f"LoRA rank r={config.r} exceeds min(in, out) = {min(size)} "
                             f"of {n} ({size[0]} -> {size[1]})")
    return chosen


def saved_modules(model, config):
    """The (name, module) pairs ``config.modules_to_save`` names: the token embedding only, and not one
    that carries a LoRA (PEFT's ModulesToSaveWrapper and a LoRA layer cannot wrap the same module)."""
    if not config.modules_to_save:
        return []
    embeddings = [(n, m) for n, m in model.named_modules() if isinstance(m, (Embedding, LoraEmbedding, SavedEmbedding))
                  and n.rsplit(".", 1)[-1] in EMBEDDING_TARGETS]
    chosen = [(n, m) for n, m in embeddings if _matches(n, config.modules_to_save)]
    unmatched = [t for t in config.modules_to_save if not any(_matches(n, (t,)) for n, _ in embeddings)]
    if unmatched or not chosen:
        raise ValueError(f"modules_to_save {list(config.modules_to_save)}: {unmatched or 'none'} name no token "
                         f"embedding of this model; lora_np saves only the token embedding "
                         f"({[n for n, _ in embeddings]})")
    lora = [n for n, m in chosen if isinstance(m, LoraEmbedding) or
            (config.target_modules != ALL_LINEAR and _matches(n, config.target_modules))]
    if lora:
        raise ValueError(f"{lora[0]} is both a LoRA target and in modules_to_save; train it one way or the other")
    return chosen


def _check_every_target_matches(model, config):
    """A list of target names: each must name a layer, or a typo beside a good name would be dropped silently."""
    if isinstance(config.target_modules, str):
        return
    candidates = [(n, m) for n, m in model.named_modules()
                  if isinstance(m, (Linear, LoraLinear, Embedding, LoraEmbedding))]
    unmatched = [t for t in config.target_modules if not any(_matches(n, (t,)) for n, _ in candidates)]
    if unmatched and len(unmatched) < len(config.target_modules):  # none matching: _target_layers says so
        linears = sorted(linear_kinds(model))
        embeddings = sorted({n.rsplit(".", 1)[-1] for n, _ in candidates} & set(EMBEDDING_TARGETS))
        raise ValueError(f"LoRA target_modules {unmatched} match no layer of this model (every name must match "
                         f"one); its Linear layers end in {linears}"
                         + (f", and its token embedding is {embeddings[0]!r}" if embeddings else ""))


def _refresh_trainable(model):
    """Only the active adapter's A and B train; every other parameter is frozen."""
    for p in model.parameters():
        p.requires_grad = False
    active = active_adapter(model)
    for _, layer in lora_layers(model):
        if active in layer.adapter_names():
            for p in layer.adapter_parameters(active):
                p.requires_grad = True


def add_lora(model, config, adapter_name="default", every_target=True):
    """Give every targeted Linear an adapter named ``adapter_name`` and freeze everything else.

    The first adapter becomes active; later ones are added inactive (as PEFT's add_adapter) until
    ``set_adapter``. With ``every_target`` (the default), each name of a ``target_modules`` list must
    match a layer (a mistyped name is an error, not dropped); ``load_adapter`` passes False, as PEFT
    loads a file whose list names more than the model has. All checks run before the model changes.
    Returns the model.
    """
    if not isinstance(config, LoraConfig):
        raise TypeError(f"add_lora needs a LoraConfig; got {type(config).__name__}")
    if not isinstance(adapter_name, str) or not re.fullmatch(r"[A-Za-z0-9_\-]+", adapter_name):
        raise ValueError(f"adapter_name must be letters, digits, '_' or '-'; got {adapter_name!r}")
    if adapter_name in adapter_names(model):
        raise ValueError(f"adapter {adapter_name!r} already exists on this model; adapters: {adapter_names(model)}")
    _refuse_if_merged(model, "add_lora")
    if every_target:
        _check_every_target_matches(model, config)
    _add_adapter_layers(model, config, adapter_name, _target_layers(model, config) + saved_modules(model, config))
    if model.active_adapter is None:
        set_adapter(model, adapter_name)
    _refresh_trainable(model)
    return model


def _add_adapter_layers(model, config, adapter_name, chosen):
    """Wrap each chosen plain module and give it the adapter; registers ``config`` on the model.
    Errors that depend on the layer type (DoRA on wte) come from a first pass that changes nothing;
    an embedding in ``config.modules_to_save`` becomes a SavedEmbedding, not a LoraEmbedding."""
    saved = {n for n, _ in saved_modules(model, config)}
    for name, module in chosen:
        if name in saved:
            continue
        if isinstance(module, (Embedding, LoraEmbedding)):
            LoraEmbedding.check_config(config)
        elif isinstance(module.weight, QuantWeight) and (config.use_dora or config.init_lora_weights in
                                                         ("pissa", "olora")):
            what = "use_dora=True" if config.use_dora else f"init_lora_weights={config.init_lora_weights!r}"
            raise ValueError(f"{what} needs the float weight of {name}, which is quantized; plain LoRA "
                             f"(init_lora_weights True, 'gaussian' or False) trains on a quantized base, or "
                             f"load the base without quantize= for DoRA, PiSSA or OLoRA")
    for name, module in chosen:
        if not isinstance(module, AdaptedLayer):  # a Linear (QuantLinear too) or the token Embedding
            parent, attr = _parent_and_attr(model, name)
            module = (SavedEmbedding if name in saved else LoraLinear if isinstance(module, Linear)
                      else LoraEmbedding)(module)
            setattr(parent, attr, module)
        module.add_adapter(adapter_name, config)
    if not hasattr(model, "peft_config"):
        model.peft_config, model.active_adapter = {}, None
    model.peft_config[adapter_name] = config


def set_adapter(model, adapter_name):
    """Make ``adapter_name`` the one adapter used in forward passes and trained."""
    _require_adapter(model, adapter_name)
    _refuse_if_merged(model, "set_adapter")
    model.active_adapter = adapter_name
    for _, layer in lora_layers(model):
        layer.active_adapter = adapter_name if adapter_name in layer.adapter_names() else None
    _refresh_trainable(model)


def delete_adapter(model, adapter_name):
    """Remove an adapter's weights everywhere; a LoraLinear left with none becomes a plain Linear again."""
    _require_adapter(model, adapter_name)
    if any(layer.merged_adapter == adapter_name for _, layer in lora_layers(model)):
        raise ValueError(f"adapter {adapter_name!r} is merged into the weights; call unmerge_lora(model) first")
    for name, layer in lora_layers(model):
        if adapter_name in layer.adapter_names():
            layer.delete_adapter(adapter_name)
        if not layer.adapter_names():
            parent, attr = _parent_and_attr(model, name)
            setattr(parent, attr, layer.to_base())
    del model.peft_config[adapter_name]
    remaining = adapter_names(model)
    if model.active_adapter == adapter_name:
        model.active_adapter = None
        if remaining:
            set_adapter(model, remaining[0])
    _refresh_trainable(model)


def merge_lora(model):
    """W ← W + s·AᵀBᵀ (DoRA: (W + s·AᵀBᵀ) ⊙ m/n) for the active adapter in every layer; forward
    passes then skip the adapter. A LoRA on the tied ``wte`` is refused (``embedding.py``)."""
    layers = lora_layers(model)
    for _, layer in layers:
        if isinstance(layer, (LoraEmbedding, SavedEmbedding)):
            layer.merge()  # raises before any layer changes
    for _, layer in layers:
        layer.merge()
    return model


def unmerge_lora(model):
    """W ← W - s·AᵀBᵀ: the base weights again, up to float rounding."""
    for _, layer in lora_layers(model):
        layer.unmerge()
    return model


def merge_and_unload(model):
    """Merge the active adapter and replace every adapted layer by its plain one: a plain model again."""
    merge_lora(model)
    for name, layer in lora_layers(model):
        parent, attr = _parent_and_attr(model, name)
        setattr(parent, attr, layer.to_base())
    for attr in ("peft_config", "active_adapter"):
        if hasattr(model, attr):
            delattr(model, attr)
    return model


@contextlib.contextmanager
def disable_lora(model):
    """Inside the block the model computes exactly its base function (adapters skipped, not subtracted)."""
    _refuse_if_merged(model, "disable_lora")
    layers = lora_layers(model)
    saved = [layer.disabled for _, layer in layers]
    for _, layer in layers:
        layer.disabled = True
    try:
        yield model
    finally:
        for (_, layer), was in zip(layers, saved):
            layer.disabled = was


def lora_state_dict(model, adapter_name=None):
    """name -> host array of one adapter's parameters (the active one by default)."""
    name = adapter_name or active_adapter(model)
    _require_adapter(model, name)
    ids = {id(p) for _, layer in lora_layers(model) if name in layer.adapter_names()
           for p in layer.adapter_parameters(name)}
    return {k: backend.to_numpy(p.data) for k, p in model.named_parameters() if id(p) in ids}


def count_parameters(model):
    """(trainable, total) parameter counts, each tied weight counted once; a quantized (frozen)
    weight counts its in·out values, as PEFT counts a 4-bit base."""
    params = model.parameters()
    quantized = sum(m.in_features * m.out_features for _, m in model.named_modules()
                    if isinstance(getattr(m, "weight", None), QuantWeight))
    quantized += sum(m.weight.size for _, m in model.named_modules() if isinstance(getattr(m, "weight", None),
                                                                                  FrozenTable))
    return sum(p.size for p in params if p.requires_grad), sum(p.size for p in params) + quantized


def print_trainable_parameters(model):
    """PEFT's line: ``trainable params: N || all params: M || trainable%: P``."""
    trainable, total = count_parameters(model)
    line = f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}"
    print(line)
    return line
