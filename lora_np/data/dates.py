"""A chat task with an answer that can be checked exactly: write a numeric date in words.

    user:      Write the date 19.04.1958 in words.
    assistant: April 19, 1958

The real SmolLM2-135M-Instruct does not do it (it copies the digits back, or talks about them:
0 of 40 held-out dates right); a small LoRA teaches it (``app/real_demo.py``). The dates are drawn
without replacement from 1900-01-01 .. 2099-12-31 by a seeded NumPy generator, so the training and
held-out splits never share a date, and the same seed gives the same files on every machine.
Every prompt has the same shape (DD.MM.YYYY), so a tokenizer that splits digits one by one (SmolLM2's
does) gives every prompt the same length.
"""

import datetime

import numpy as np

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
PROMPT = "Write the date {} in words."
FIRST, LAST = datetime.date(1900, 1, 1), datetime.date(2099, 12, 31)


def date_pair(day):
    """(prompt, answer) for a ``datetime.date``: ("Write the date 05.03.2021 in words.", "March 5, 2021")."""
    return PROMPT.format(f"{day.day:02d}.{day.month:02d}.{day.year}"), f"{MONTHS[day.month - 1]} {day.day}, {day.year}"


def date_splits(n_train, n_test, seed=0):
    """(train pairs, held-out pairs): ``n_train + n_test`` distinct dates, the held-out ones disjoint
    from the training ones."""
    span = LAST.toordinal() - FIRST.toordinal() + 1
    if n_train < 1 or n_test < 1 or n_train + n_test > span:
        raise ValueError(f"the date task needs 1 <= n_train, n_test and n_train + n_test <= {span}; "
                         f"got n_train={n_train}, n_test={n_test}")
    offsets = np.random.default_rng(seed).choice(span, size=n_train + n_test, replace=False)
    pairs = [date_pair(datetime.date.fromordinal(FIRST.toordinal() + int(k))) for k in offsets]
    return pairs[:n_train], pairs[n_train:]


def as_conversations(pairs):
    """Chat lines for ``chat_dataset``: [{"messages": [user, assistant]}, ...]."""
    return [{"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]}
            for prompt, answer in pairs]
