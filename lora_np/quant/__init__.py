"""QLoRA's quantized frozen base: NF4 and int8 blockwise codes, double quantization, QuantLinear.

    packed, absmax = nf4_quantize(w)                 # byte for byte as bitsandbytes' quantize_4bit
    model = load_gpt2(path, quantize="nf4")          # Linear layers -> QuantLinear, tensor by tensor
    model = load_model(path, quantize="bf16")        # or kept as bfloat16 words (a bf16 file's, as stored),
                                                     # the embedding / LM head too (FrozenTable, table.py)
    add_lora(model, LoraConfig(...)); train ...      # LoRA in float32 on top of the 4-bit base
    dequantize_model(model)                          # float weights again (e.g. before save_gpt2)
"""

from .bf16 import Bf16Weight, bf16_words, widen_bf16
from .codebooks import DYNAMIC_CODE, NF4_CODE, dynamic_codebook, nf4_codebook
from .double_quant import double_dequantize, double_quantize
from .int8 import int8_dequantize, int8_quantize
from .linear import QuantLinear
from .model import dequantize_model, is_quantized, quantize_model
from .nf4 import nf4_dequantize, nf4_quantize
from .linear_op import quant_linear, quant_lora_linear
from .table import FrozenTable, table_logits
from .weight import QuantWeight, check_scheme

__all__ = ["NF4_CODE", "DYNAMIC_CODE", "nf4_codebook", "dynamic_codebook", "nf4_quantize", "nf4_dequantize",
           "int8_quantize", "int8_dequantize", "double_quantize", "double_dequantize", "QuantWeight",
           "QuantLinear", "quant_linear", "quant_lora_linear", "quantize_model", "dequantize_model",
           "is_quantized", "check_scheme", "Bf16Weight", "bf16_words", "widen_bf16", "FrozenTable", "table_logits"]
