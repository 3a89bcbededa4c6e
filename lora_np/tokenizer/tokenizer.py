"""The tokenizer as Hugging Face ``tokenizers`` builds it: five small stages and an added vocabulary.

    text ──added vocabulary──> ordinary text and added-token ids     (added_vocabulary.py)
         ──normalizer───────> NFC, " " -> "▁" ...                     (normalizers.py)
         ──pre-tokenizer────> words                                   (pre_tokenizers.py)
         ──model────────────> ids of each word: BPE merges            (bpe.py)
         ──post-processor───> bos/eos around the ids, when asked      (post_processor.py)
    ids  ──decoder──────────> text                                    (decoders.py)

``Tokenizer`` composes them; reading and writing files (``tokenizer_json.py``, ``gguf_tokenizer.py``,
``gpt2_files.py``, ``tiktoken_file.py``, ``loading.py``) and chat templates (``chat_template.py``) are
functions beside it. ``BPETokenizer`` (``bpe_tokenizer.py``) builds one from a vocabulary and merges.
"""

import bisect
import itertools
import operator
import re

from .added_vocabulary import AddedVocabulary
from .chat_template import end_of_turn_id, render_chat
from .decoders import Decoder
from .normalizers import Normalizer
from .post_processor import PostProcessor
from .pre_tokenizers import PreTokenizer

EOT = "<|endoftext|>"
_SURROGATE = re.compile("[\ud800-\udfff]")


class Tokenizer:
    """``encode(text) -> list[int]``, ``decode(ids) -> str``, ``apply_chat_template(messages)``.

    ``model`` is a ``bpe.BPE``; ``added_tokens`` are tokenizer.json's [{"id", "content", "special"}, ...];
    ``special_tokens_map`` names the bos/eos/pad/unk tokens; ``chat_template`` is a Jinja string.
    """

    def __init__(self, model, *, added_tokens=(), normalizer=None, pre_tokenizer=None, post_processor=None,
                 decoder=None, special_tokens_map=None, chat_template=None, source="vocab"):
        self.model = model
        self.added = AddedVocabulary(added_tokens, model.vocab, source)
        self.normalizer = normalizer if isinstance(normalizer, Normalizer) else Normalizer(normalizer)
        self.pre_tokenizer = pre_tokenizer if isinstance(pre_tokenizer, PreTokenizer) else PreTokenizer(pre_tokenizer)
        self.decoder = decoder if isinstance(decoder, Decoder) else (
            Decoder(decoder) if decoder is not None else Decoder.byte_level_decoder())
        if self.pre_tokenizer.byte_level != model.byte_level or self.decoder.byte_level != model.byte_level:
            raise ValueError(f"{source}: a byte-level BPE needs a pre-tokenizer ending with ByteLevel and the "
                             f"ByteLevel decoder; a SentencePiece-style one needs neither")
        self.special_tokens_map = {k: v for k, v in (special_tokens_map or {}).items() if v is not None}
        self.chat_template = chat_template
        self.id_to_bytes = self._decode_table()
        try:
            self.post_processor = post_processor if isinstance(post_processor, PostProcessor) else (
                PostProcessor(post_processor, self.token_to_id))
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None
        except (TypeError, AttributeError, KeyError, IndexError) as exc:
            raise ValueError(f"{source}: post_processor {post_processor!r:.80} is malformed "
                             f"({type(exc).__name__}: {exc})") from None
        bad = [i for i in self.post_processor.prefix + self.post_processor.suffix
               if type(i) is not int or not 0 <= i < len(self.id_to_bytes) or self.id_to_bytes[i] is None]
        if bad:
            raise ValueError(f"{source}: post_processor: token id {bad[0]!r} is not a token of this vocabulary")
        self._id_to_token = None

    def _decode_table(self):
        """id -> the bytes it decodes to (None: no token has the id)."""
        added = {t["id"]: t["content"] for t in self.added.tokens}
        table = [None] * (max([len(self.model.vocab) - 1, *added]) + 1)
        for token, i in self.model.vocab.items():
            table[i] = self.decoder.token_bytes(token)
        for i, content in added.items():
            table[i] = content.encode("utf-8") if self.decoder.byte_level else self.decoder.token_bytes(content)
        return table

    # ---- the stages' data, by the names the rest of lora_np reads --------------------------------
    vocab = property(lambda self: self.model.vocab, doc="The model's {token: id}.")
    merges = property(lambda self: self.model.merges, doc="The model's ranked (left, right) pairs.")
    ranks = property(lambda self: self.model.ranks, doc="{(left, right): rank}.")
    ignore_merges = property(lambda self: self.model.ignore_merges)
    added_tokens = property(lambda self: self.added.tokens, doc="[{'id', 'content', 'special'}, ...].")
    added_ids = property(lambda self: self.added.ids, doc="{content: id} of the added tokens.")
    special_ids = property(lambda self: self.added.special_ids, doc="Ids of the special added tokens.")
    template_ids = property(lambda self: (self.post_processor.prefix, self.post_processor.suffix))
    _cache = property(lambda self: self.model._cache, doc="The model's word cache (benchmarks clear it).")

    @property
    def vocab_size(self):
        """One more than the largest id: the rows a model's embedding needs."""
        return len(self.id_to_bytes)

    def token_to_id(self, token):
        """The id of an added token or a vocabulary entry (None if it is neither)."""
        return self.added.ids[token] if token in self.added.ids else self.model.vocab.get(token)

    def id_to_token(self, i):
        """The added token or vocabulary entry (as the vocabulary spells it) with id ``i``."""
        if self._id_to_token is None:
            self._id_to_token = {j: t for t, j in self.model.vocab.items()}
            self._id_to_token.update({j: t for t, j in self.added.ids.items()})
        return self._id_to_token[i]

    def _named_id(self, name):
        token = self.special_tokens_map.get(name)
        return None if token is None else self.token_to_id(token)

    eos_token_id = property(lambda self: self._named_id("eos_token"), doc="End of sequence (None if unnamed).")
    bos_token_id = property(lambda self: self._named_id("bos_token"), doc="Beginning of sequence (None if unnamed).")
    pad_token_id = property(lambda self: self._named_id("pad_token"), doc="Padding (None if unnamed).")
    eot_token_id = property(lambda self: self._named_id("eos_token"), doc="GPT-2's name for eos_token_id.")
    end_of_turn_id = property(end_of_turn_id, doc="The token closing an assistant turn (chat_template.py).")

    def __repr__(self):
        return f"{type(self).__name__}(vocab_size={self.vocab_size}, merges={len(self.model.merges)})"

    # ---- encode / decode -------------------------------------------------------------------
    def encode_word(self, word):
        """The ids of one pre-tokenized word (the model's, cached)."""
        return self.model.encode_word(word)

    def encode(self, text, allow_special=False, add_special_tokens=False):
        """Token ids of ``text``. ``allow_special``: special tokens written in the text become their ids
        (as ``tokenizers`` does); ``add_special_tokens``: the post-processor's tokens around it (a bos)."""
        _check_text(text)
        ids, encode_word = [], self.model.encode_word
        normalizer, pre_tokenizer = self.normalizer, self.pre_tokenizer
        for _, part, token_id in self.added.split(text, allow_special):
            if token_id is not None:
                ids.append(token_id)
                continue
            for word in pre_tokenizer(normalizer(part)):
                ids.extend(encode_word(word))
        return self.post_processor(ids) if add_special_tokens else ids

    def encode_with_spans(self, text, allow_special=False):
        """(ids, spans): each token's (start, end) character range in ``text``, for loss masks over spans.

        A token that covers part of a multi-byte character spans the whole character. Where the
        normalizer moves characters (NFC), each token of a changed line spans the whole line.
        """
        _check_text(text)
        ids, spans = [], []
        for start, part, token_id in self.added.split(text, allow_special):
            if token_id is not None:
                ids.append(token_id)
                spans.append((start, start + len(part)))
                continue
            normal, to_raw = self.normalizer.with_positions(part)
            at = 0
            for word in self.pre_tokenizer(normal):
                word_ids = self.model.encode_word(word)
                ids.extend(word_ids)
                last = len(to_raw) - 1  # an unk token's bytes are not the text's: keep its span inside the text
                spans.extend((start + to_raw[min(a, last)][0], start + to_raw[min(b - 1, last)][1])
                             for a, b in _char_spans(self.decoder.word_text(word), word_ids, self.id_to_bytes, at))
                at += len(word)
        return ids, spans

    def decode(self, ids, skip_special=False):
        """The text of ``ids``; a cut inside a multi-byte character shows as U+FFFD."""
        try:
            ids = [operator.index(i) for i in ids]
        except TypeError:
            raise TypeError(f"decode needs integer token ids; got {ids!r:.80}") from None
        bad = [i for i in ids if not 0 <= i < self.vocab_size or self.id_to_bytes[i] is None] if ids else []
        if bad:
            raise ValueError(f"decode: token id {bad[0]} is not in [0, {self.vocab_size})"
                             + (" (no token has it)" if 0 <= bad[0] < self.vocab_size else ""))
        if skip_special:
            ids = [i for i in ids if i not in self.added.special_ids]
        text = b"".join([self.id_to_bytes[i] for i in ids]).decode("utf-8", errors="replace")
        return self.decoder.finish(text)

    def apply_chat_template(self, messages, add_generation_prompt=False, tokenize=True, **kwargs):
        """The chat template rendered for ``messages`` (``chat_template.render_chat``); its ids (special
        tokens in the rendering are tokens, as transformers encodes it), or the text."""
        text = render_chat(self.chat_template, messages, add_generation_prompt,
                           {**self.special_tokens_map, **kwargs})
        return self.encode(text, allow_special=True) if tokenize else text


def _check_text(text):
    if not isinstance(text, str):
        raise TypeError(f"encode needs a str; got {type(text).__name__}")
    bad = _SURROGATE.search(text)
    if bad:
        raise ValueError(f"text holds a lone surrogate U+{ord(bad.group()):04X} at index {bad.start()}, which is "
                         f"not Unicode text and has no UTF-8 bytes; fix the source (e.g. decode its bytes with "
                         f"errors='replace')")


def _char_spans(word, ids, id_to_bytes, at):
    """Each token's [start, end) in characters of the text ``word`` starts at position ``at`` of.

    A byte the vocabulary lacks has no token (``bpe.py``), and a token may join the bytes around it: then
    a token's bytes are matched in order in the word's, skipping the dropped ones."""
    data = word.encode("utf-8")
    char_ends = list(itertools.accumulate(len(c.encode("utf-8")) for c in word))  # byte where char i ends
    skips = sum(len(id_to_bytes[i]) for i in ids) != len(data)
    spans, b = [], 0
    for i in ids:
        piece = id_to_bytes[i]
        start, nb = b, b + len(piece)
        if skips:
            start, nb = _match_in_order(data, piece, b)
        spans.append((at + bisect.bisect_right(char_ends, start), at + bisect.bisect_left(char_ends, nb) + 1))
        b = nb
    return spans


def _match_in_order(data, piece, b):
    """(start, end) in ``data`` of ``piece``'s bytes found one by one from ``b`` on, skipping others; a piece
    not found so (an unk token's text) stands for the one byte at ``b``."""
    start, j = None, b
    for byte in piece:
        while j < len(data) and data[j] != byte:
            j += 1
        if j >= len(data):
            return b, min(b + 1, len(data))
        start = j if start is None else start
        j += 1
    return (b if start is None else start), j
