"""``load_tokenizer(path)``: the tokenizer of any model folder or GGUF file the library reads, in one call.

    char_vocab.json                    a character model (CharTokenizer)
    tokenizer.json                     Hugging Face's one file (Llama 3, Qwen2/2.5/3, SmolLM2, Gemma, GPT-2)
    vocab.json + merges.txt            GPT-2's files, Hugging Face's names
    encoder.json + vocab.bpe           the same, OpenAI's names
    x.gguf, or a folder holding one    llama.cpp's file: its tokenizer.ggml.* metadata and chat template
                                       (``gguf_tokenizer.py``); the file says everything, so the folder's
                                       config files are not read

Beside a BPE's files, ``tokenizer_config.json`` names the special tokens (``bos_token``,
``eos_token``, ``pad_token``, ``unk_token``: a string or {"content": ...}) and holds the chat template
(``chat_template``, a string or a list of named templates, or a ``chat_template.jinja`` file beside
it, which wins, as in transformers). An id missing there is taken from ``config.json``
(``eos_token_id``: an int, or a list whose first entry is used; ``bos_token_id``, ``pad_token_id``).
"""

from pathlib import Path

from ..io.atomic import read_json
from .bpe_tokenizer import BPETokenizer
from .char import VOCAB_FILE as CHAR_VOCAB_FILE, CharTokenizer
from .chat_template import ChatTemplate
from .gpt2_files import FILE_NAMES
from .tokenizer_json import CONFIG_FILE, TOKENIZER_FILE

TEMPLATE_FILE = "chat_template.jinja"


def load_tokenizer(path):
    """CharTokenizer or BPETokenizer of the model folder or GGUF file ``path`` (see the module docstring)."""
    path = Path(path)
    if path.suffix == ".gguf" and not path.is_dir():
        return BPETokenizer.from_gguf(path)
    if not path.is_dir():
        raise FileNotFoundError(f"model directory not found: {path}")
    if (path / CHAR_VOCAB_FILE).is_file():
        return CharTokenizer.load(path)
    if (path / TOKENIZER_FILE).is_file():
        tokenizer = BPETokenizer.from_tokenizer_json(path / TOKENIZER_FILE)
    elif any((path / name).exists() for pair in FILE_NAMES for name in pair):
        tokenizer = BPETokenizer.from_dir(path)
    else:
        return BPETokenizer.from_gguf(_one_gguf(path))
    read_tokenizer_config(tokenizer, path)
    return tokenizer


def _one_gguf(path):
    found = sorted(path.glob("*.gguf"))
    if len(found) == 1:
        return found[0]
    if found:
        raise ValueError(f"{path} holds {len(found)} GGUF files ({', '.join(f.name for f in found[:4])}); "
                         f"name the one to read")
    raise FileNotFoundError(f"no tokenizer in {path}: expected tokenizer.json, vocab.json + merges.txt or "
                            f"encoder.json + vocab.bpe (a BPE model), a .gguf file, or {CHAR_VOCAB_FILE} "
                            f"(a character model)")


def read_tokenizer_config(tokenizer, path):
    """Set ``tokenizer``'s special-token names and chat template from the folder's config files."""
    config = read_json(path / CONFIG_FILE, "tokenizer config") if (path / CONFIG_FILE).is_file() else {}
    model_config = read_json(path / "config.json", "model config") if (path / "config.json").is_file() else {}
    names = dict(tokenizer.special_tokens_map)
    gpt2_kind = tokenizer.is_gpt2_kind()
    for name in ("bos_token", "eos_token", "pad_token", "unk_token"):
        token = _token_name(config.get(name), path / CONFIG_FILE, name)
        if token is None and (name in config or (name == "unk_token" and not gpt2_kind)):
            names.pop(name, None)  # the config says there is none; unk: only GPT-2's classes name one unasked
        elif token is not None:
            if tokenizer.token_to_id(token) is None:
                raise ValueError(f"{path / CONFIG_FILE}: {name} {token!r} is not a token of this tokenizer")
            names[name] = token
        elif name not in names and name != "unk_token":
            names.update(_from_model_config(tokenizer, model_config, name, path))
    tokenizer.special_tokens_map = names
    tokenizer.chat_template = _chat_template(config, path)


def _token_name(value, file, name):
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise ValueError(f"{file}: {name} must be a string or {{'content': ...}}; got {value!r:.60}")


def _from_model_config(tokenizer, config, name, path):
    """{name: token} from config.json's ``<name>_id`` (first entry of a list), if it names a token."""
    value = config.get(f"{name}_id")
    value = value[0] if isinstance(value, list) and value else value
    if value is None:
        return {}
    if type(value) is not int or not 0 <= value < tokenizer.vocab_size or tokenizer.id_to_bytes[value] is None:
        raise ValueError(f"{path / 'config.json'}: {name}_id {value!r} is not a token id of this tokenizer "
                         f"(0..{tokenizer.vocab_size - 1})")
    return {name: tokenizer.id_to_token(value)}


def _chat_template(config, path):
    if (path / TEMPLATE_FILE).is_file():
        return ChatTemplate((path / TEMPLATE_FILE).read_text(encoding="utf-8"), str(path / TEMPLATE_FILE))
    template = config.get("chat_template")
    if isinstance(template, list):
        named = [t.get("template") for t in template if isinstance(t, dict) and t.get("name") == "default"]
        template = named[0] if named else None
    if template is not None and not isinstance(template, str):
        raise ValueError(f"{path / CONFIG_FILE}: chat_template must be a string or a list of "
                         f"{{'name', 'template'}} with a 'default'; got {template!r:.60}")
    return None if template is None else ChatTemplate(template, f"{path / CONFIG_FILE} 'chat_template'")
