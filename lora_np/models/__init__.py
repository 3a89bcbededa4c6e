"""The model families: GPT-2 (``gpt2.py``), the Llama family (``llama.py``: Llama, Qwen2, Qwen3) and
Gemma 3 (``gemma3.py``: Llama's classes, switched and subclassed one change at a time).

Each family is a model file and a spec beside it (``gpt2_spec.py``, ``llama_spec.py``, ``gemma3_spec.py``: a
``ModelFamily``, spec.py) holding what the rest of lora_np needs: config.json in and out, the
checkpoint's tensor names and shapes, the parameter count, PEFT's layout flag, the default LoRA
targets and llama.cpp's architecture name. ``registry.py`` finds a family's spec by model_type or
by model. Generation runs every family's own forward with the one ``KVCache`` (cache.py,
generation.py).

Weights are stored (in, out), names are Hugging Face's. Every ``Linear`` computes y = x W + b with
W of shape (in_features, out_features), the layout of GPT-2's Conv1D, and every parameter keeps
its Hugging Face name (``transformer.h.0.attn.c_attn.weight``, ``model.layers.0.self_attn.q_proj.weight``)
so checkpoints and PEFT adapter files map one to one. Why (in, out): x W is the math as written in
the papers and in picoGPT, the gradient dW = xᵀ G needs no transpose, and GPT-2's files need none
either. PyTorch's nn.Linear (Llama's checkpoints, transformers, rasbt's code) stores (out, in) and
computes x Wᵀ: a learner comparing shapes with those sees each Linear weight transposed here, and
the Llama loader and saver transpose them (the spec's ``fan_in_fan_out`` says which layout a
family's files use). LoRA's A (r, in) and B (out, r) are PEFT's shapes whatever the base's layout.
"""

from .cache import KVCache
from .generation import generate
from .gemma3 import Gemma3, Gemma3Config
from .gpt2 import GPT, GPTConfig
from .llama import Llama, LlamaConfig
from .registry import FAMILIES, MODEL_TYPES, family_for_type, family_of, find_family
from .spec import ModelFamily, Sizes

__all__ = ["GPT", "GPTConfig", "Llama", "LlamaConfig", "Gemma3", "Gemma3Config", "KVCache", "generate", "FAMILIES",
           "MODEL_TYPES", "family_for_type", "family_of", "find_family", "ModelFamily", "Sizes"]
