"""Files: atomic writes, safetensors without torch, Hugging Face GPT-2 folders, training checkpoints."""

from .atomic import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json
from .gpt2_checkpoint import load_gpt2, save_gpt2
from .safetensors_file import read_safetensors, write_safetensors

__all__ = ["atomic_write_bytes", "atomic_write_json", "atomic_write_text", "read_json",
           "load_gpt2", "save_gpt2", "read_safetensors", "write_safetensors"]
