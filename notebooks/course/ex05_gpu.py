"""Check for notebook 05 (GPUs): timing asynchronous work honestly."""

import threading
import time

from . import ExerciseFailed, exercise


class FakeDevice:
    """A stand-in for a GPU stream: ``launch`` returns at once and queues ``seconds`` of work,
    which runs in the background after the work queued before it (a stream runs in order);
    ``synchronize`` waits for everything launched so far."""

    def __init__(self, seconds):
        self.seconds, self.pending = seconds, []

    def launch(self):
        before = self.pending[-1] if self.pending else None

        def work():
            if before is not None:
                before.join()
            time.sleep(self.seconds)

        worker = threading.Thread(target=work)
        worker.start()
        self.pending.append(worker)

    def synchronize(self):
        for worker in self.pending:
            worker.join()
        self.pending.clear()


@exercise
def timed(fn):
    device = FakeDevice(0.05)
    device.launch()                                  # work left over from before: not ours to time
    seconds = fn(device.launch, device.synchronize)
    if device.pending:
        raise ExerciseFailed("work was still running when timed() returned: synchronize after the call")
    if seconds > 10:
        raise ExerciseFailed(f"{seconds:.0f} for 50 ms of work: return seconds, as time.perf_counter() counts")
    if not 0.04 <= seconds < 0.09:
        raise ExerciseFailed(f"measured {1000 * seconds:.0f} ms for work that takes 50 ms: "
                             "synchronize before starting the clock and before stopping it")
    return f"{1000 * seconds:.0f} ms for 50 ms of asynchronous work"
