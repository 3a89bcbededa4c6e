"""Every differentiable op, and the Tensor operators and methods that call them.

Each op lives in a file named after what it computes, with its forward and its hand-derived
backward side by side; the derivation is in the op's docstring.
"""

from ..autograd import Tensor
from .attention import causal_self_attention, scaled_dot_product_attention
from .cross_entropy import cross_entropy
from .dropout import dropout
from .elementwise import add, div, exp, log, mul, neg, pow, sqrt, sub, tanh
from .embedding import embedding
from .geglu import geglu
from .gelu import gelu
from .indexing import getitem
from .join import concatenate, split, stack
from .layer_norm import layer_norm
from .linear import linear
from .lm_head_loss import lm_head, lm_head_loss
from .lora_linear import lora_linear
from .matmul import matmul
from .reductions import max, mean, sum
from .rms_norm import rms_norm
from .rope import rope
from .shape import permute, reshape, swapaxes, transpose
from .softcap import softcap
from .softmax import log_softmax, softmax
from .swiglu import swiglu

__all__ = [
    "add", "sub", "mul", "div", "neg", "pow", "exp", "log", "tanh", "sqrt", "matmul", "lm_head",
    "sum", "mean", "max", "reshape", "transpose", "permute", "swapaxes", "getitem",
    "concatenate", "split", "stack", "softmax", "log_softmax", "cross_entropy", "layer_norm",
    "gelu", "embedding", "dropout", "scaled_dot_product_attention", "causal_self_attention", "linear",
    "lora_linear", "lm_head_loss", "rms_norm", "rope", "swiglu", "geglu", "softcap",
]


def _install_tensor_methods():
    """Operators and methods of Tensor, e.g. ``a @ b`` is ``matmul(a, b)``."""
    Tensor.__add__ = add
    Tensor.__radd__ = lambda self, other: add(other, self)
    Tensor.__sub__ = sub
    Tensor.__rsub__ = lambda self, other: sub(other, self)
    Tensor.__mul__ = mul
    Tensor.__rmul__ = lambda self, other: mul(other, self)
    Tensor.__truediv__ = div
    Tensor.__rtruediv__ = lambda self, other: div(other, self)
    Tensor.__matmul__ = matmul
    Tensor.__rmatmul__ = lambda self, other: matmul(other, self)
    Tensor.__pow__ = pow
    Tensor.__neg__ = neg
    Tensor.__getitem__ = getitem
    for fn in (exp, log, tanh, sqrt, sum, mean, max, reshape, transpose, permute, swapaxes, softmax, log_softmax):
        setattr(Tensor, fn.__name__, fn)
    Tensor.T = property(lambda self: transpose(self))


_install_tensor_methods()
