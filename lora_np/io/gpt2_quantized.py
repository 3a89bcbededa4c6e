"""Loading a GPT-2 checkpoint straight into a quantized model, one tensor at a time.

``load_gpt2(path, quantize="nf4")`` lands here. The float model is never built: the safetensors
header is read and checked first (names, shapes, config agreement: nothing is allocated for a
file that does not fit), then each tensor is read on its own from the file, quantized if it is a
Linear weight, and dropped (``quantized_load.fill_quantized``, shared with the Llama family). The
peak is therefore the final model plus the largest single tensor
(for GPT-2, the float32 token embedding, which QLoRA keeps in float32 anyway), instead of the
whole float32 file, the float32 model and a copy of both.

Quantized: every Linear weight (c_attn, c_proj, c_fc: 85M of GPT-2 small's 124M parameters).
Kept in float32: wte (and the tied LM head), wpe, layer norms and all biases, as in QLoRA and
transformers' ``BitsAndBytesConfig(load_in_4bit=True)``.
"""

from .. import backend
from ..models import GPT
from ..models.gpt2_spec import GPT2
from .gpt2_layout import check_config_against_tensors, check_tied_lm_head, state_dict_from_checkpoint
from .quantized_load import check_block_sizes, fill_quantized
from .safetensors_file import open_safetensors


def load_quantized_gpt2(weights, config, dtype, scheme, block_size=64, double_quant=True):
    """A GPT whose Linear layers are ``QuantLinear`` (``scheme`` = "nf4" or "int8"), read tensor by tensor."""
    names, _ = open_safetensors(weights)
    sd, lm_head = state_dict_from_checkpoint(names, weights)
    check_config_against_tensors(config, sd, weights.parent)  # every name and shape the spec implies
    check_block_sizes({n: e.shape[0] for n, e in sd.items() if GPT2.is_linear_weight(n)}, block_size, scheme)
    xp = backend.xp
    model = GPT(config, dtype=dtype, empty=True)  # placeholders, no memory: each is read (and quantized) below
    fill_quantized(model, "", lambda name: xp.asarray(sd[name].read(), dtype=dtype),
                   (scheme, block_size, double_quant, dtype))
    check_tied_lm_head(lm_head, model.transformer.wte.weight, weights)
    return model
