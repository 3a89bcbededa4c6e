"""Neural-network building blocks: Module and the layers GPT-2 is made of."""

from .containers import ModuleDict, ModuleList, ParameterDict
from .dropout import Dropout
from .embedding import Embedding
from .layer_norm import LayerNorm
from .linear import Linear
from .module import Module
from .rms_norm import RMSNorm
from ..autograd import Parameter

__all__ = ["Module", "ModuleList", "ModuleDict", "ParameterDict", "Linear", "Embedding", "LayerNorm", "RMSNorm",
           "Dropout", "Parameter"]
