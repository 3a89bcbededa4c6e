"""Token streams with loss masks, train/val splits, and batches of fixed-length windows.

A window of block_size + 1 tokens gives inputs x = w[:-1] and targets y = w[1:]; a target is set
to -1 (ignored by the loss) where the mask says its token cannot be predicted. Windows of a task
start at line boundaries, so each answer comes with its prompt. User files: text_files.py.
"""

import numpy as np

from .tasks import VOCAB, answer_mask, make_lines
from ..tokenizer import CharTokenizer


class TokenDataset:
    """``tokens`` (int array), ``counts`` (bool: target counts in the loss), ``starts`` (window starts).

    ``has_answers``: the counted targets come in runs that are answers (a task's answer, a JSONL
    completion), so answer accuracy means something; in free text every token counts and it does not.

    ``padding``: how many tokens (that the loss ignores) each split's stream ends with, so that its last
    record gets a whole window; ``describe`` does not count them.

    ``packed``: the splits are records packed back to back, ``starts`` each record's first token (and
    every block_size tokens inside a longer one); each window then scores only the targets up to the
    next window's start (``packed_windows``), so every counted token is scored in exactly one window.
    """

    def __init__(self, tokenizer, splits, block_size, name, has_answers=False, packed=False, padding=0):
        self.tokenizer, self.block_size, self.name = tokenizer, block_size, name
        self.has_answers, self.padding = has_answers, padding  # padding: tokens appended to each split's end
        self.stops = {}  # split -> the last target position each window scores (packed records only)
        if packed:
            for split, (tokens, counts, starts) in list(splits.items()):
                starts, self.stops[split] = packed_windows(counts, starts, block_size)
                splits[split] = (tokens, counts, starts)
        self.splits = splits  # split -> (tokens, counts, starts)
        for split, (tokens, _, starts) in splits.items():
            if len(tokens) < block_size + 1 or len(starts) == 0:
                raise ValueError(f"{name}: the {split} split has {len(tokens)} tokens; it needs at least "
                                 f"block_size + 1 = {block_size + 1}")

    def describe(self):
        """One line: the data's name, and real tokens (not the end's padding) and windows per split."""
        parts = [f"{len(tokens) - self.padding:,} {split} tokens in {len(starts):,} windows"
                 for split, (tokens, _, starts) in self.splits.items()]
        return f"{self.name} ({', '.join(parts)})"

    def _windows(self, split, picks):
        tokens, counts, starts = self.splits[split]
        offsets = starts[picks][:, None] + np.arange(self.block_size + 1)
        w, keep = tokens[offsets], counts[offsets]
        if split in self.stops:  # a packed window scores its targets up to its stop only
            keep &= offsets <= self.stops[split][picks][:, None]
        y = np.where(keep[:, 1:], w[:, 1:], -1)
        return w[:, :-1], y

    def batch(self, split, batch_size, rng):
        """``batch_size`` random windows: (x, y) host int64 arrays of shape (B, block_size)."""
        starts = self.splits[split][2]
        return self._windows(split, rng.integers(0, len(starts), size=batch_size))

    def fixed_batches(self, split, batch_size, n_batches):
        """The same evaluation windows every time: evenly spaced over the split."""
        starts = self.splits[split][2]
        picks = np.linspace(0, len(starts) - 1, num=min(len(starts), batch_size * n_batches)).astype(np.int64)
        return [self._windows(split, picks[i:i + batch_size]) for i in range(0, len(picks), batch_size)]


def packed_windows(counts, starts, block_size):
    """(starts, stops) of packed records' windows: every counted target in exactly one window.

    The window at s_i holds tokens s_i … s_i + block_size and scores the targets at positions
    s_i + 1 … stop_i, stop_i = min(s_(i+1), s_i + block_size): the targets from the next start on
    belong to the next window (starts are at most block_size apart, so the ranges (s_i, stop_i]
    tile the stream). Without the stop, a record would be scored once per window starting within
    block_size before it, so later records would weigh more. Each window still sees its record from
    the record's first token. A window whose range holds no counted target is left out (nothing to
    learn; its range holds no counted target that another window loses)."""
    starts = np.asarray(starts, dtype=np.int64)
    stops = np.minimum(np.append(starts[1:], np.iinfo(np.int64).max), starts + block_size)
    scored = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])  # scored[k] = counts[:k].sum()
    keep = scored[np.minimum(stops + 1, len(counts))] - scored[starts + 1] > 0
    return starts[keep], stops[keep]


WINDOW_MULTIPLE = 64  # a window sized to the data is rounded up to a multiple of this many tokens


def records_window(lengths, context, multiple=WINDOW_MULTIPLE):
    """(block_size, note): the window that holds the longest record (its length in tokens rounded up
    to a multiple of ``multiple``), at most ``context``; ``note`` says so for the start-up line.
    A window the model's whole context long would score one short record among thousands of
    positions that score nothing (issue 35: 8,192 for ~70-token chats, 20× slower)."""
    longest = int(max(lengths))
    block = min(context, max(multiple, -(-longest // multiple) * multiple))
    capped = f", capped by the model's context of {context}" if block == context and longest > context else ""
    return block, (f"windows sized to the data: the longest record is {longest} tokens, rounded up to a multiple "
                   f"of {multiple}{capped}; --block-size sets another")


def pack_records(records, block_size, pad):
    """One split of records (ids, counts) laid back to back: (tokens, counts, starts), each record's
    first token a start (and every block_size tokens inside a longer one), the stream padded at the
    end with ``block_size`` tokens ``pad`` that the loss ignores, so the last record gets a whole
    window. ``TokenDataset(packed=True)`` then leaves out the windows with nothing to score."""
    tokens, counts, starts, at = [np.zeros(0, np.int64)], [np.zeros(0, bool)], [], 0
    for ids, mask in records:
        starts.extend(range(at, at + len(ids), block_size))
        tokens.append(np.asarray(ids, np.int64))
        counts.append(np.asarray(mask, bool))
        at += len(ids)
    tokens.append(np.full(block_size, pad, np.int64))
    counts.append(np.zeros(block_size, bool))
    return np.concatenate(tokens), np.concatenate(counts), np.array(starts, np.int64)


def packed_dataset(groups, tokenizer, block_size, pad, name, val_fraction=0.1, context=None, whole=False):
    """A TokenDataset of ``groups`` of records (ids, counts): one group per example (a JSONL line's one
    record, a conversation's renderings), kept in one split. The last ``val_fraction`` of the groups
    (at least one) is validation, or with ``whole`` every group is (an evaluation of the whole file).
    ``block_size`` None: ``records_window`` (needs ``context``), and the dataset's ``window_note`` says so."""
    note = ""
    if block_size is None:
        block_size, note = records_window([len(ids) for group in groups for ids, _ in group], context)
    n_val = len(groups) if whole else max(1, int(len(groups) * val_fraction))
    parts = {"val": groups} if whole else {"train": groups[:-n_val], "val": groups[-n_val:]}
    splits = {split: pack_records([r for group in part for r in group], block_size, pad)
              for split, part in parts.items()}
    data = TokenDataset(tokenizer, splits, block_size, name, has_answers=True, packed=True, padding=block_size)
    data.window_note = note
    return data


def stride_windows(tokens, block_size, stride):
    """(x, y) windows over a token stream that score each token once, as transformers' perplexity
    guide does: windows of ``block_size + 1`` tokens start every ``stride`` tokens (stride ≤ block_size);
    each scores only the targets past the previous window's end, with the context before them given
    (the first window scores all but the stream's first token). The last window, shorter, is padded
    with targets -1. Stride = block_size: disjoint windows, the fastest; a smaller stride gives each
    scored token more context, for block_size / stride times the work."""
    tokens = np.asarray(tokens, dtype=np.int64)
    n, xs, ys, scored_to = len(tokens), [], [], 0  # scored_to: targets before this position are scored
    for begin in range(0, max(n - 1, 1), stride):
        end = min(begin + block_size + 1, n)
        w = np.zeros(block_size + 1, np.int64)
        w[:end - begin] = tokens[begin:end]
        y = np.full(block_size, -1, np.int64)
        first = max(scored_to, begin + 1)
        y[first - begin - 1:end - begin - 1] = tokens[first:end]
        xs.append(w[:-1])
        ys.append(y)
        scored_to = end
        if end == n:
            break
    return np.stack(xs), np.stack(ys)


def task_dataset(task, block_size, n_train=6000, n_val=600, seed=0, tokenizer=None):
    """A copy/reverse task as a TokenDataset (in the shared task vocabulary unless ``tokenizer`` is given)."""
    tokenizer = tokenizer or CharTokenizer(VOCAB)
    splits = {}
    for split, n, split_seed in (("train", n_train, seed), ("val", n_val, seed + 10_000)):
        lines = make_lines(task, n, split_seed)
        text = "".join(lines)
        counts = np.array([c for line in lines for c in answer_mask(line)], dtype=bool)
        line_starts = np.cumsum([0] + [len(line) for line in lines[:-1]])
        starts = line_starts[line_starts + block_size + 1 <= len(text)]
        splits[split] = (tokenizer.encode(text), counts, starts)
    return TokenDataset(tokenizer, splits, block_size, f"task {task!r}", has_answers=True)
