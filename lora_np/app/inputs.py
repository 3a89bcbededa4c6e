"""What the user hands a command: --data/--task as a dataset, the window, a prompt. All of it is
checked before a model's weights are read."""

import sys
from pathlib import Path

import numpy as np

from ..data import TASKS, chat_dataset, encode_text, file_dataset, is_chat_jsonl, jsonl_dataset, task_dataset
from ..data.dataset import WINDOW_MULTIPLE, stride_windows
from ..data.text_files import (check_data_file_name, read_jsonl_examples, read_text_file, read_text_tokens,
                               start_tokens)
from ..training.progress import plural
from ..models import family_of
from ..tokenizer import BPETokenizer, CharTokenizer


def check_unknown_policy(policy):
    if policy not in ("error", "drop") and not (policy.startswith("map:") and len(policy) == 5):
        raise ValueError(f"--unknown-chars must be error, drop or map:X (X one character); got {policy!r}")


def check_data_flags(args):
    """--task or --data, one of them, before anything is read."""
    if args.task and args.data:
        raise ValueError("give --task or --data, not both")
    check_unknown_policy(args.unknown_chars)
    if not args.task and not args.data:
        raise ValueError(f"{args.command} needs data: --data FILE (.txt text, or .jsonl lines of "
                         f"{{\"prompt\": ..., \"completion\": ...}} or chat {{\"messages\": [...]}}) "
                         f"or --task {{{','.join(sorted(TASKS))}}} (an embedded toy task)")


def make_dataset(args, block_size, tokenizer=None, context=None):
    """The data named by --data or --task, tokenized with ``tokenizer`` (None: the data's own characters).
    ``block_size`` None: windows sized to the data (a file's longest record, a text's length), at
    most ``context``; a task's windows are the context."""
    check_data_flags(args)
    if args.data and is_chat_jsonl(args.data):  # {"messages": [...]} lines: rendered with the model's template
        return chat_dataset(args.data, block_size, tokenizer, context=context)
    if args.data:
        return file_dataset(args.data, block_size, tokenizer, unknown=args.unknown_chars, context=context)
    if tokenizer is not None and not isinstance(tokenizer, CharTokenizer):
        raise ValueError(f"--task {args.task} is a character-level toy task; this model has a BPE tokenizer: "
                         f"give --data FILE instead")
    return task_dataset(args.task, block_size or context, seed=args.seed, tokenizer=tokenizer)


class EvalInputs:
    """What ``eval`` scores: ``batches`` of (x, y) windows, the data's ``name``, whether it has
    answers, its window, and ``what``: the line that says which part of the data is used."""

    def __init__(self, name, batches, has_answers, block_size, what):
        self.name, self.batches, self.has_answers, self.block_size, self.what = (
            name, batches, has_answers, block_size, what)


def _batched(x, y, batch_size):
    return [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(x), batch_size)]


def _text_eval(args, tokenizer, context):
    """A text file, whole: windows by transformers' stride rule, each token scored once."""
    path = Path(args.data)
    tokens, _ = read_text_tokens(path, tokenizer, args.unknown_chars)
    if len(tokens) < 2:
        raise ValueError(f"data file {path} has {len(tokens)} token; perplexity needs at least 2")
    block = args.block_size or min(context, -(-(len(tokens) - 1) // WINDOW_MULTIPLE) * WINDOW_MULTIPLE)
    stride = args.stride or block
    if stride > block:
        raise ValueError(f"--stride {stride} exceeds the window of {block} tokens: the tokens between two windows "
                         f"would never be scored; give --stride at most {block}")
    x, y = stride_windows(tokens, block, stride)
    what = (f"the whole file {path.name}: {plural(len(tokens), 'token')}, each scored once (the first has no "
            f"context), in {plural(len(x), 'window')} of {block} tokens starting every {stride}")
    return EvalInputs(f"text file {path.name}", _batched(x, y, args.batch_size), False, block, what)


def eval_inputs(args, tokenizer, config):
    """``eval``'s data: a --data file whole (a text by the stride rule, a .jsonl file's every record
    once), or a --task's validation split (``--eval-batches`` batches evenly spaced over it)."""
    check_data_flags(args)
    if args.stride is not None and (not args.data or Path(args.data).suffix.lower() == ".jsonl"):
        raise ValueError("--stride sets how windows slide over a text file; a .jsonl file's records and a "
                         "--task's lines have windows of their own")
    block = window(args, config)
    if args.data and Path(args.data).suffix.lower() != ".jsonl":
        check_data_file_name(args.data)
        return _text_eval(args, tokenizer, model_context(config))
    if args.data:
        data = (chat_dataset(args.data, block, tokenizer, context=model_context(config), whole=True)
                if is_chat_jsonl(args.data) else
                jsonl_dataset(args.data, block, tokenizer, unknown=args.unknown_chars, context=model_context(config),
                              whole=True))
        n = len(data.splits["val"][2])
        batches = data.fixed_batches("val", args.batch_size, -(-n // args.batch_size))
        what = (f"the whole file {Path(args.data).name}: every record, in {plural(n, 'window')} of "
                f"{data.block_size} tokens")
        return EvalInputs(data.name, batches, True, data.block_size, what + _note(data))
    data = make_dataset(args, block, tokenizer, model_context(config))
    n = len(data.splits["val"][2])
    batches = data.fixed_batches("val", args.batch_size, args.eval_batches)
    what = (f"the validation split of task {args.task!r}: {min(n, args.batch_size * args.eval_batches):,} of "
            f"{plural(n, 'window')} of {data.block_size} tokens")
    return EvalInputs(data.name, batches, True, data.block_size, what)


def _note(data):
    return f" ({data.window_note})" if getattr(data, "window_note", "") else ""


def new_tokenizer(args):
    """pretrain's tokenizer: None (a task's, or characters of --data) or a BPE trained on --data."""
    if args.tokenizer == "char":
        if args.vocab_size is not None:
            raise ValueError("--vocab-size goes with --tokenizer bpe (a character vocabulary is the text's characters)")
        return None
    if not args.data or args.vocab_size is None:
        raise ValueError("--tokenizer bpe needs --data FILE (the text it learns from) and --vocab-size N")
    path = Path(args.data)
    check_data_file_name(path)
    text = ("".join(ex.prompt + ex.completion for ex in read_jsonl_examples(path))
            if path.suffix.lower() == ".jsonl" else read_text_file(path))
    return BPETokenizer.train(text, args.vocab_size)


def model_context(config):
    """The longest sequence the model ``config`` describes takes, in tokens."""
    return family_of(config).sizes(config).context


def window(args, config):
    """The training/evaluation window: --block-size, at most the model's context; None when not
    given (the data then sizes it: ``make_dataset``)."""
    context = model_context(config)
    if args.block_size is None:
        return None
    if args.block_size > context:
        raise ValueError(f"--block-size {args.block_size} exceeds the model's context of {context} tokens")
    return args.block_size


def prompt_ids(tokenizer, prompt, block_size, unknown, prefix="lora-np generate"):
    """The prompt's ids after the tokenizer's start tokens (Gemma's and Llama 3's <bos>, as transformers'
    ``tokenizer(prompt)`` puts it), cut to the model's context from the left; what was cut is said on stderr."""
    if not prompt:
        raise ValueError("--prompt must not be empty")
    check_unknown_policy(unknown)
    try:
        ids = encode_text(tokenizer, prompt, unknown)
    except ValueError as exc:
        raise ValueError(f"--prompt: {exc}; --unknown-chars drop removes them, --unknown-chars map:X replaces "
                         f"each by the vocabulary's character X") from None
    if len(ids) == 0:
        raise ValueError(f"--prompt {prompt!r} tokenizes to nothing")
    ids = np.concatenate([np.asarray(start_tokens(tokenizer), np.int64), ids])
    if len(ids) > block_size:
        cut = tokenizer.decode(ids[:-block_size])
        print(f"{prefix}: the prompt is {len(ids)} tokens, longer than the model's context of {block_size}; "
              f"its first {len(ids) - block_size} tokens were cut: {cut!r:.80}", file=sys.stderr)
        ids = ids[-block_size:]
    return ids
