"""What a training run says while it works, and how it stops.

On a terminal: a tqdm bar on stderr (the latest loss in its postfix). Anywhere else (a log file,
nohup, CI): a line on stderr after the first step, every ``every_s`` seconds and at the end, with
the loss, the time per step and the time left. Evaluation lines go to stdout, JSON records to
``<out>/log.jsonl``. Ctrl-C is deferred to the end of the step in progress.
"""

import contextlib
import json
import signal
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .. import backend


class RunLog:
    """JSON lines in <out>/log.jsonl (lines after a resumed step are dropped) and console lines."""

    def __init__(self, out_dir, resume_step, quiet):
        self.path = Path(out_dir) / "log.jsonl" if out_dir else None
        self.quiet = quiet
        if self.path and self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, record, console=None):
        if self.path:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
        if console and not self.quiet:
            tqdm.write(console, file=sys.stdout)


def say(message, quiet=False):
    """One status line on stderr (what is being loaded, what a run will do)."""
    if not quiet:
        tqdm.write(message, file=sys.stderr)


def plural(n, word):
    """"1 step", "2 steps": ``n`` with ``word``, an s added unless n is 1."""
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def format_seconds(seconds):
    seconds = int(round(seconds))
    h, m, s = seconds // 3600, seconds // 60 % 60, seconds % 60
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """The bar on a terminal, a line every ``every_s`` seconds elsewhere, nothing when quiet.
    ``unit``: what one update is ("step" of training, "batch" of evaluation)."""

    def __init__(self, total, initial, quiet, every_s, unit="step", stream=None):
        self.stream = stream or sys.stderr
        on_terminal = self.stream.isatty()
        self.total, self.done, self.every_s, self.unit, self.last_line = total, initial, every_s, unit, None
        self.lines = not quiet and not on_terminal
        self.bar = tqdm(total=total, initial=initial, disable=quiet or not on_terminal, leave=False,
                        dynamic_ncols=True, file=self.stream, unit=unit)

    def update(self, loss, ms_per_unit):
        self.done += 1
        self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        self.bar.update(1)
        now = time.monotonic()
        due = self.last_line is None or now - self.last_line >= self.every_s or self.done == self.total
        if self.lines and due:
            self.last_line = now
            eta = format_seconds((self.total - self.done) * ms_per_unit / 1000) if np.isfinite(ms_per_unit) else "?"
            print(f"{self.unit} {self.done}/{self.total} | loss {loss:.4f} | {ms_per_unit:.1f} ms/{self.unit} | "
                  f"ETA {eta}", file=self.stream, flush=True)

    def close(self):
        self.bar.close()


class Interrupt:
    """A Ctrl-C asked for between steps: ``requested`` is set by the handler, read by the loop."""

    def __init__(self):
        self.requested = False


@contextlib.contextmanager
def deferred_interrupt():
    """Ctrl-C sets ``Interrupt.requested``, which the loop reads between steps, so a step is never
    half applied. A second Ctrl-C interrupts at once."""
    interrupt = Interrupt()
    if threading.current_thread() is not threading.main_thread():
        yield interrupt
        return

    def handler(signum, frame):
        if interrupt.requested:
            raise KeyboardInterrupt
        interrupt.requested = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield interrupt
    finally:
        signal.signal(signal.SIGINT, previous)


class StepClock:
    """Wall time per step, except for the first ``memory_steps``, whose peak memory tracemalloc
    measures instead (tracing slows a step down, so those steps are not timed)."""

    def __init__(self, memory_steps):
        self.memory_steps, self.times, self.peak, self.last = memory_steps, [], 0, float("nan")

    @contextlib.contextmanager
    def measure(self, steps_done):
        measuring = steps_done < self.memory_steps and backend.get_backend() == "numpy"
        if measuring and not tracemalloc.is_tracing():
            tracemalloc.start()
        t0 = time.perf_counter()
        yield
        self.last = time.perf_counter() - t0
        if measuring:
            self.peak = max(self.peak, tracemalloc.get_traced_memory()[1])
            if steps_done + 1 == self.memory_steps:
                tracemalloc.stop()
        else:
            self.times.append(self.last)

    def close(self):
        if tracemalloc.is_tracing():
            tracemalloc.stop()

    def ms_per_step(self):
        """The median over every timed step (NaN if none was timed)."""
        return 1000 * float(np.median(self.times)) if self.times else float("nan")

    def recent_ms_per_step(self):
        """The median over the last 50 timed steps (the last step's while none was timed): for the ETA."""
        return 1000 * float(np.median(self.times[-50:])) if self.times else 1000 * self.last
