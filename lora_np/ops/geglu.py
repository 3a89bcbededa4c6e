"""Fused GeGLU gate: h = gelu(a) ⊙ b, the middle of Gemma's MLP ``down(gelu_tanh(gate(x)) ⊙ up(x))``.

Llama's SwiGLU (``swiglu.py``) with SiLU swapped for GELU in its tanh form (transformers'
``gelu_pytorch_tanh``, the same function as GPT-2's ``gelu_new``, ``gelu.py``):

    gelu(a) = ½ a (1 + tanh u),    u = √(2/π) (a + 0.044715 a³)

By the product rule, with g = dL/dh (all elementwise):

    dL/da = (g ⊙ b) ⊙ gelu'(a)            dL/db = g ⊙ gelu(a)

where gelu'(a) = ½((1 + t) + a (1 - t²) du/da), t = tanh u, is derived in ``gelu.py``. So the
backward is GELU's own backward fed the upstream gradient g ⊙ b (the up projection scales what
flows into the gate), and dL/db is the forward's gate times g. The kernels are ``gelu.py``'s, not
a copy: the forward keeps a and b only (the backward needs them anyway) and the backward
recomputes σ(2u), as SwiGLU recomputes σ. Both run on blocks of rows (``parallel.for_rows``, in
``gated.py``, the glue SwiGLU shares).
Plain version: ``lora_np.ops.reference.geglu``.
"""

from .. import backend
from .gated import gated
from .gelu import gelu_backward_kernel, gelu_kernel


def geglu_kernel(h, a, b):
    """h = gelu(a) ⊙ b."""
    gelu_kernel(h, a)                       # h = gelu(a) = a σ(2u)
    h *= b                                  # h = gelu(a) ⊙ b


def geglu_backward_kernel(da, db, g, a, b):
    """da = (g ⊙ b) ⊙ gelu'(a),  db = g ⊙ gelu(a)  (σ(2u) recomputed from a)."""
    backend.xp.multiply(g, b, out=db)       # g ⊙ b: the gradient reaching gelu(a), in db until db is written
    gelu_backward_kernel(da, db, a)         # da = (g ⊙ b) ⊙ gelu'(a)
    gelu_kernel(db, a)                      # forward was h = gelu(a) ⊙ b, so dh/db = gelu(a)
    db *= g                                 # db = g ⊙ gelu(a)


def geglu(a, b):
    """h = gelu_tanh(a) ⊙ b for two Tensors of the same shape (``a`` = gate(x), ``b`` = up(x)).
    Backward: the module docstring. Plain version: ``lora_np.ops.reference.geglu``."""
    return gated("geglu", geglu_kernel, geglu_backward_kernel, a, b)
