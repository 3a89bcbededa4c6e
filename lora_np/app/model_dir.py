"""Model directories, the two kinds the command line reads and writes:

    a Hugging Face GPT-2 folder    config.json, model.safetensors, vocab.json + merges.txt
                                   (OpenAI's names encoder.json + vocab.bpe are read too)
    a character model              config.json, model.safetensors, char_vocab.json

An adapter directory holds the adapter files plus a copy of its base's tokenizer files. A LoRA
adapter's safetensors metadata records the SHA-256 of the base weights it was trained on, so it
is never applied to another base by mistake.
"""

import hashlib
from pathlib import Path

from ..io.atomic import atomic_write_bytes
from ..io.gpt2_checkpoint import WEIGHTS_FILE, load_gpt2
from ..io.safetensors_file import open_safetensors
from ..lora import load_adapter
from ..lora.files import WEIGHTS_FILE as ADAPTER_WEIGHTS
from ..tokenizer import BPETokenizer, CharTokenizer
from ..tokenizer.bpe import FILE_NAMES as BPE_FILE_NAMES
from ..tokenizer.char import VOCAB_FILE as CHAR_VOCAB_FILE

# Files that travel with a Hugging Face tokenizer; copied as they are into what the CLI writes.
HF_TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_tokenizer(model_dir):
    """The directory's tokenizer: CharTokenizer (char_vocab.json) or BPETokenizer (vocab.json + merges.txt)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model directory not found: {model_dir}")
    if (model_dir / CHAR_VOCAB_FILE).is_file():
        return CharTokenizer.load(model_dir)
    if any((model_dir / name).exists() for pair in BPE_FILE_NAMES for name in pair):
        return BPETokenizer.from_dir(model_dir)
    raise FileNotFoundError(f"no tokenizer in {model_dir}: expected {CHAR_VOCAB_FILE} (a character model) or "
                            f"vocab.json + merges.txt (a Hugging Face GPT-2 folder)")


def check_vocab_sizes(tokenizer, config, model_dir):
    """A char vocabulary must be the model's exactly; a BPE's ids must all be rows of the embedding."""
    n, v = tokenizer.vocab_size, config.vocab_size
    if (n != v) if isinstance(tokenizer, CharTokenizer) else (n > v):
        raise ValueError(f"{model_dir}: the tokenizer has {n} tokens but config.json says vocab_size={v}")


def save_tokenizer(tokenizer, source_dir, out):
    """Put the tokenizer beside what was written to ``out``: a Hugging Face folder's files are
    copied byte for byte, anything else is saved by the tokenizer itself."""
    out, source_dir = Path(out), Path(source_dir) if source_dir else None
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(tokenizer, BPETokenizer) and source_dir and (source_dir / "vocab.json").is_file():
        for name in HF_TOKENIZER_FILES:
            if (source_dir / name).is_file() and (source_dir / name).resolve() != (out / name).resolve():
                atomic_write_bytes(out / name, (source_dir / name).read_bytes())
    else:
        tokenizer.save(out)


def check_adapter_base(adapter_dir, model_dir):
    _, meta = open_safetensors(Path(adapter_dir) / ADAPTER_WEIGHTS)
    expected = meta.get("base_model_sha256")
    if expected and expected != file_sha256(Path(model_dir) / WEIGHTS_FILE):
        raise ValueError(f"adapter {adapter_dir} was trained on another base model (SHA-256 of the base "
                         f"weights differs from {Path(model_dir) / WEIGHTS_FILE})")


def load_model_dir(model_dir, adapter_dir=None, quantize=None):
    """(model, tokenizer) from a model directory, with a LoRA adapter applied if given;
    ``quantize`` ("nf4", "int8") loads the Linear weights quantized (QLoRA's frozen base)."""
    tokenizer = load_tokenizer(model_dir)
    model = load_gpt2(model_dir, quantize=quantize)
    check_vocab_sizes(tokenizer, model.config, model_dir)
    if adapter_dir is not None:
        check_adapter_base(adapter_dir, model_dir)
        load_adapter(model, adapter_dir)
    return model, tokenizer


def adapter_metadata(base_dir):
    return {"base_model_sha256": file_sha256(Path(base_dir) / WEIGHTS_FILE),
            "base_model_path": str(Path(base_dir).resolve())}
