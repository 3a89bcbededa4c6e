"""Model directories, the kinds the command line reads and writes:

    a Hugging Face GPT-2 folder    config.json, model.safetensors, vocab.json + merges.txt
                                   (OpenAI's names encoder.json + vocab.bpe are read too)
    a Llama / Qwen2 / Qwen3 folder config.json, model.safetensors (or an index and its shards),
                                   tokenizer.json (SmolLM2, Llama 3.2, Qwen2.5, Qwen3 ...)
    a character model              config.json, model.safetensors, char_vocab.json
    a llama.cpp GGUF file          x.gguf (or a folder holding one and no model.safetensors): config,
                                   weights, tokenizer and chat template all in the one file

config.json's ``model_type`` names the family (``lora_np.models``), whose spec reads the config
(cheap, before any data is tokenized or memory estimated) and gives the default LoRA targets;
``load_model`` reads the weights. An adapter directory holds
the adapter files plus a copy of its base's tokenizer files. A LoRA adapter's safetensors metadata
records a fingerprint of the base's tensors (io/fingerprint.py: names, shapes, a strided sample of
values; older adapters: the SHA-256 of the weights file), so it is not applied to another base by
mistake; the same weights saved again otherwise (as shards, in another dtype) are the same base.
"""

import hashlib
import time
from pathlib import Path

from ..io.atomic import atomic_write_bytes, read_json
from ..io.fingerprint import gguf_fingerprint, weights_fingerprint
from ..io.gpt2_checkpoint import CONFIG_FILE, WEIGHTS_FILE
from ..io.gguf_read import find_gguf, open_gguf
from ..io.hf_checkpoint import INDEX_FILE, load_model, open_checkpoint
from ..io.safetensors_file import open_safetensors
from ..lora import load_adapter
from ..lora.files import CONFIG_FILE as ADAPTER_CONFIG, WEIGHTS_FILE as ADAPTER_WEIGHTS
from ..models import family_for_type, family_of
from ..tokenizer import BPETokenizer, CharTokenizer, load_tokenizer  # load_tokenizer: any folder's (tokenizer.json too)
from ..tokenizer.gpt2_files import FILE_NAMES as BPE_FILE_NAMES
from ..training.progress import say
from .memory import available_bytes, format_bytes, parameter_count

LARGE_MODEL_BYTES = 64 << 20  # loading takes a noticeable time from here on
# Files that travel with a Hugging Face tokenizer; copied byte for byte into what the CLI writes.
HF_TOKENIZER_FILES = tuple(name for pair in BPE_FILE_NAMES for name in pair) + (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _model_family(model_dir):
    """(the family's spec, config.json's dict, its path); a folder without model_type is a GPT-2. A GGUF
    file's config is the one its metadata stands for (io/gguf_read.py)."""
    gguf_file = find_gguf(model_dir) if Path(model_dir).exists() else None
    if gguf_file is not None:
        hf = open_gguf(gguf_file)[0]
        return family_for_type(hf["model_type"], gguf_file), hf, gguf_file
    path = Path(model_dir) / CONFIG_FILE
    if not Path(model_dir).is_dir():
        raise FileNotFoundError(f"model directory not found: {model_dir}")
    hf = read_json(path, "model config")
    return family_for_type(hf.get("model_type", "gpt2") if isinstance(hf, dict) else None, path), hf, path


def default_lora_targets(model_dir):
    """The LoRA targets when --targets is not typed, PEFT's default for the model's family (its
    spec's ``lora_targets``): GPT-2's fused attention projection c_attn (a character model is a
    GPT-2), or q_proj and v_proj for the Llama family (Llama, Qwen2, Qwen3)."""
    return _model_family(model_dir)[0].lora_targets


def read_model_config(model_dir):
    """The model's config from its config.json alone (no weights read); errors name the file."""
    family, hf, path = _model_family(model_dir)
    try:
        return family.config_from_hf(hf, path)
    except ValueError as exc:
        raise ValueError(str(exc) if str(path) in str(exc) else f"{path}: {exc}") from None


def check_vocab_sizes(tokenizer, config, model_dir):
    """A char vocabulary must be the model's exactly; a BPE's ids must all be rows of the embedding."""
    n, v = tokenizer.vocab_size, config.vocab_size
    if (n != v) if isinstance(tokenizer, CharTokenizer) else (n > v):
        raise ValueError(f"{model_dir}: the tokenizer has {n} tokens but config.json says vocab_size={v}")


def save_tokenizer(tokenizer, source_dir, out):
    """Put the tokenizer beside what was written to ``out``: a Hugging Face folder's files (either
    naming) are copied byte for byte, anything else is saved by the tokenizer itself."""
    out, source_dir = Path(out), Path(source_dir) if source_dir else None
    out.mkdir(parents=True, exist_ok=True)
    copied = [name for name in HF_TOKENIZER_FILES if source_dir and (source_dir / name).is_file()]
    if not isinstance(tokenizer, BPETokenizer) or not copied:
        tokenizer.save(out)
    for name in copied if isinstance(tokenizer, BPETokenizer) else ():
        if (source_dir / name).resolve() != (out / name).resolve():
            atomic_write_bytes(out / name, (source_dir / name).read_bytes())


GENERATION_CONFIG = "generation_config.json"  # the base's decoding defaults; a merged folder keeps them
STORED_FLOATS = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}


def copy_generation_config(source_dir, out):
    if (Path(source_dir) / GENERATION_CONFIG).is_file():
        atomic_write_bytes(Path(out) / GENERATION_CONFIG, (Path(source_dir) / GENERATION_CONFIG).read_bytes())


def stored_dtype(model_dir):
    """The float dtype a folder's weights are stored in ("float32", "bfloat16", "float16"), or None
    (float64, or mixed): what a merged folder is written as by default."""
    if find_gguf(model_dir) is not None:
        return None  # a GGUF base merges into a float32 folder, or into GGUF again with merge --gguf
    kinds = {t.stored for t in open_checkpoint(Path(model_dir)).values()}
    return STORED_FLOATS.get(kinds.pop()) if len(kinds) == 1 else None


def weights_file(model_dir):
    """The file that identifies a folder's weights: model.safetensors, a sharded folder's index, or its GGUF file."""
    gguf_file = find_gguf(model_dir)
    if gguf_file is not None:
        return gguf_file
    single = Path(model_dir) / WEIGHTS_FILE
    return single if single.is_file() or not (Path(model_dir) / INDEX_FILE).is_file() else Path(model_dir) / INDEX_FILE


def base_fingerprint(model_dir):
    """The fingerprint of a model folder's weights (io/fingerprint.py): the same for the same tensors
    however they are stored (one file or shards, bfloat16 or float32); a GGUF file's, of its blocks."""
    gguf_file = find_gguf(model_dir)
    if gguf_file is not None:
        return gguf_fingerprint(open_gguf(gguf_file)[1])
    return weights_fingerprint(open_checkpoint(Path(model_dir)))


def _adapter_base_differs(meta, model_dir):
    """What says the adapter's base is not ``model_dir`` (a phrase), or None when they agree or nothing was recorded."""
    if meta.get("base_model_fingerprint"):
        if meta["base_model_fingerprint"] != base_fingerprint(model_dir):
            return f"a sample of the base's tensors differs from {model_dir}'s"
    elif meta.get("base_model_sha256") and meta["base_model_sha256"] != file_sha256(weights_file(model_dir)):
        return f"the SHA-256 of the base's weights file differs from {weights_file(model_dir)}'s (an adapter saved " \
               f"before tensor fingerprints: the same weights saved otherwise differ too)"
    return None


def check_adapter_base(adapter_dir, model_dir, force=False):
    """Refuse an adapter recorded as trained on another base; with ``force``, say what is skipped and go on."""
    if not Path(adapter_dir).is_dir():
        raise FileNotFoundError(f"adapter directory not found: {adapter_dir}")
    _, meta = open_safetensors(Path(adapter_dir) / ADAPTER_WEIGHTS)
    differs = _adapter_base_differs(meta, model_dir)
    if differs is None:
        return
    trained_on = f" (it was trained on {meta['base_model_path']})" if meta.get("base_model_path") else ""
    if not force:
        raise ValueError(f"adapter {adapter_dir} was trained on another base model{trained_on}: {differs}; "
                         f"--force applies it anyway")
    say(f"--force: applying {adapter_dir} although it was trained on another base model{trained_on}: {differs}",
        False)


def describe_model(config, itemsize=4):
    n, s = parameter_count(config), family_of(config).sizes(config)
    return (f"{n:,} parameters, {s.layers} layers × {s.width} wide, context {s.context}, "
            f"vocabulary {s.vocab_size:,} ({format_bytes(n * itemsize)})")


def is_large(config):
    return parameter_count(config) * 4 >= LARGE_MODEL_BYTES


BASE_DTYPES = ("auto", "float32", "bfloat16")  # --base-dtype: how the frozen base's Linear weights are kept


def frozen_storage(model_dir, base_dtype="auto", quantize=None, needs_float=False, decoding=False):
    """``load_model``'s ``quantize`` for a command's flags: --quantize's scheme; "bf16" for --base-dtype
    bfloat16, or for auto when the folder stores bfloat16 (kept word for word: the same values, half
    float32's memory; a float16 folder would be rounded, so auto keeps it float32); else None (float32).
    ``needs_float``: the command needs float weights (--full, DoRA, PiSSA/OLoRA), so auto means float32.
    ``decoding`` (generate): auto means float32 too when it fits (``float32_fits``): a decode step reads
    each weight once for one row, and widening bf16 bands costs more than the GEMV they feed (NumPy has
    no bf16 GEMV): a bf16 base decodes about half as fast (benchmarks/results_llm.md, Decoding)."""
    if base_dtype not in BASE_DTYPES:
        raise ValueError(f"--base-dtype {base_dtype!r}: accepted {', '.join(BASE_DTYPES)}")
    if quantize or base_dtype == "float32":
        if quantize and base_dtype == "bfloat16":
            raise ValueError(f"--quantize {quantize} and --base-dtype bfloat16 both say how the base is kept; "
                             f"choose one")
        return quantize
    if base_dtype == "bfloat16":
        if needs_float:
            raise ValueError("--base-dtype bfloat16 keeps the base frozen in bfloat16, and --full, --dora, "
                             "--init pissa/olora need its float weights; use --base-dtype float32")
        return "bf16"
    if needs_float or stored_dtype(model_dir) != "bfloat16":
        return None
    return None if decoding and float32_fits(model_dir) else "bf16"


def float32_fits(model_dir):
    """True when the model's float32 weights take at most half the memory this process can still take."""
    free = available_bytes()
    return free is not None and 4 * parameter_count(read_model_config(model_dir)) <= free // 2


def adapter_needs_float(adapter_dir):
    """True for a DoRA adapter, whose layer needs the base's float weights. A missing adapter (or its
    config) is not judged here: the model is checked first, then the adapter, each with its own error."""
    config = Path(adapter_dir) / ADAPTER_CONFIG if adapter_dir is not None else None
    return config is not None and config.is_file() and bool(read_json(config, "adapter config").get("use_dora"))


def load_model_dir(model_dir, adapter_dir=None, quantize=None, quiet=True, force=False, base_dtype="float32",
                   needs_float=False, decoding=False):
    """(model, tokenizer) from a model directory, with a LoRA adapter applied if given (``force``:
    even one recorded as trained on another base); ``quantize`` ("nf4", "int8") loads the Linear
    weights quantized (QLoRA's frozen base);
    ``base_dtype`` ("auto", "float32", "bfloat16") keeps them in bfloat16 (``frozen_storage``, which
    ``decoding`` tells that the model is for generation).
    Unless ``quiet``, a model above LARGE_MODEL_BYTES says on stderr what it loads and how long it took."""
    tokenizer = load_tokenizer(model_dir)
    config = read_model_config(model_dir)
    check_vocab_sizes(tokenizer, config, model_dir)
    quiet = quiet or not is_large(config)
    quantize = frozen_storage(model_dir, base_dtype, quantize, needs_float or adapter_needs_float(adapter_dir),
                              decoding)
    kept = {None: "", "bf16": ", Linear weights kept in bfloat16"}.get(quantize, f", quantized to {quantize}")
    say(f"loading {model_dir}: {describe_model(config)}{kept}", quiet)
    start = time.perf_counter()
    model = load_model(model_dir, quantize=quantize)
    if adapter_dir is not None:
        check_adapter_base(adapter_dir, model_dir, force)
        load_adapter(model, adapter_dir)
    say(f"loaded in {time.perf_counter() - start:.1f} s" + (f" (adapter {adapter_dir})" if adapter_dir else ""),
        quiet)
    return model, tokenizer


def adapter_metadata(base_dir):
    return {"base_model_fingerprint": base_fingerprint(base_dir), "base_model_path": str(Path(base_dir).resolve())}
