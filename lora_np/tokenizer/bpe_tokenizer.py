"""``BPETokenizer``: a ``Tokenizer`` (tokenizer.py) whose model is a BPE, built from a vocabulary and its
merges, and read from or written to any file kind lora_np knows.

Built directly it is GPT-2's pipeline: GPT-2's regex and the byte alphabet, "<|endoftext|>" (id 50256)
as the added special token and the bos/eos/unk name when the vocabulary has it. A tokenizer file
brings its own stages. ``eot_token_id`` is the end-of-sequence id (``eos_token_id``), which the data
code appends to close a document.
"""

from . import tokenizer_json
from .bpe import BPE, check_vocab
from .bpe_training import learn_bpe
from .gguf_tokenizer import read_gguf_tokenizer
from .gpt2_files import read_gpt2_files, write_gpt2_files
from .pre_tokenizers import PreTokenizer
from .tiktoken_file import read_tiktoken
from .tokenizer import EOT, Tokenizer, _check_text


class BPETokenizer(Tokenizer):
    """``BPETokenizer(vocab, merges)``; ``from_dir``, ``from_tiktoken``, ``from_tokenizer_json``, ``from_gguf``,
    ``save``, ``train``.

    ``vocab`` maps tokens (byte-level characters, or SentencePiece pieces) to ids 0..V-1; ``merges`` is
    the ranked list of (left, right) pairs. The model's options (``ignore_merges``, ``byte_fallback``,
    ``unk_token``, ``fuse_unk``) are ``bpe.BPE``'s; the stages' are ``Tokenizer``'s.
    """

    def __init__(self, vocab, merges, source="vocab", *, added_tokens=None, normalizer=None, pre_tokenizer=None,
                 post_processor=None, decoder=None, ignore_merges=False, byte_fallback=False, unk_token=None,
                 fuse_unk=False, special_tokens_map=None, chat_template=None):
        pre_tokenizer = pre_tokenizer if isinstance(pre_tokenizer, PreTokenizer) else (
            PreTokenizer(pre_tokenizer) if pre_tokenizer is not None else PreTokenizer.gpt2())
        model = BPE(vocab, merges, source, byte_level=pre_tokenizer.byte_level, ignore_merges=ignore_merges,
                    byte_fallback=byte_fallback, unk_token=unk_token, fuse_unk=fuse_unk)
        if added_tokens is None:
            added_tokens = [{"id": model.vocab[EOT], "content": EOT, "special": True}] if EOT in model.vocab else []
        if special_tokens_map is None:  # GPT-2's convention, as its tokenizer classes default to
            has_eot = EOT in model.vocab or any(t.get("content") == EOT for t in added_tokens)
            special_tokens_map = {"bos_token": EOT, "eos_token": EOT, "unk_token": EOT} if has_eot else {}
        super().__init__(model, added_tokens=added_tokens, normalizer=normalizer, pre_tokenizer=pre_tokenizer,
                         post_processor=post_processor, decoder=decoder, special_tokens_map=special_tokens_map,
                         chat_template=chat_template, source=source)

    @classmethod
    def from_dir(cls, path):
        """Read vocab.json + merges.txt (Hugging Face) or encoder.json + vocab.bpe (OpenAI) from ``path``."""
        vocab, merges, vocab_file = read_gpt2_files(path)
        check_vocab(vocab, merges, vocab_file)
        if EOT not in vocab:
            raise ValueError(f"{vocab_file}: no {EOT!r} token; GPT-2 vocabularies end with it")
        return cls(vocab, merges, source=str(vocab_file))

    @classmethod
    def from_tiktoken(cls, path, pattern, special_tokens=None):
        """A tiktoken rank file (``base64 rank`` lines) with its split ``pattern`` (the file does not hold
        it): ``lora_np.tokenizer`` exports the known ones, ``GPT2_REGEX``, ``QWEN_REGEX`` (Qwen2/2.5/3) and
        ``LLAMA3_REGEX``. ``special_tokens`` {content: id} are the added special tokens.

            from lora_np.tokenizer import BPETokenizer, QWEN_REGEX
            tok = BPETokenizer.from_tiktoken("qwen.tiktoken", pattern=QWEN_REGEX)"""
        vocab, merges = read_tiktoken(path)
        added = [{"id": i, "content": t, "special": True} for t, i in (special_tokens or {}).items()]
        return cls(vocab, merges, source=str(path), added_tokens=added,
                   pre_tokenizer=PreTokenizer.regex_then_bytes(pattern), ignore_merges=True,
                   special_tokens_map={})

    @classmethod
    def from_tokenizer_json(cls, path):
        """Hugging Face's one-file ``tokenizer.json`` (see ``tokenizer_json.py`` for what is read)."""
        return cls(**tokenizer_json.read_tokenizer_json(path))

    @classmethod
    def from_gguf(cls, path):
        """The tokenizer a GGUF file's ``tokenizer.ggml.*`` metadata describes (see ``gguf_tokenizer.py``)."""
        return cls(**read_gguf_tokenizer(path))

    def is_gpt2_kind(self):
        """True when GPT-2's two files say everything: GPT-2's pre-tokenizer, no normalizer or extras."""
        return (self.pre_tokenizer.json == PreTokenizer.gpt2().json and self.normalizer.json is None
                and not self.model.ignore_merges and self.post_processor.json is None and self.chat_template is None
                and [t["content"] for t in self.added_tokens] in ([], [EOT]) and self.model.unk_token is None)

    def save(self, directory):
        """GPT-2's kind: vocab.json + merges.txt; any other: tokenizer.json + tokenizer_config.json.
        Files are written atomically, and ``tokenizers``/``transformers`` read them back."""
        directory = tokenizer_json.make_directory(directory)
        if self.is_gpt2_kind():
            write_gpt2_files(directory, self.vocab, self.merges)
        else:
            tokenizer_json.write_tokenizer_files(directory, self)
        return directory

    @classmethod
    def train(cls, text, vocab_size, min_frequency=2):
        """Learn a byte-level BPE of ``vocab_size`` tokens from ``text``: 256 bytes, merges, "<|endoftext|>"
        (``bpe_training.py``: the same merges as Hugging Face's ``BpeTrainer``)."""
        if not isinstance(text, str):
            raise TypeError(f"BPETokenizer.train needs a str; got {type(text).__name__}")
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 257:
            raise ValueError(f"vocab_size must be an int >= 257 (256 bytes + <|endoftext|>); got {vocab_size!r}")
        if isinstance(min_frequency, bool) or not isinstance(min_frequency, int) or min_frequency < 1:
            raise ValueError(f"min_frequency must be a positive int; got {min_frequency!r}")
        _check_text(text)
        tokens, merges = learn_bpe(PreTokenizer.gpt2()(text), vocab_size - 1, min_frequency)
        return cls({t: i for i, t in enumerate([*tokens, EOT])}, merges, source="trained")
