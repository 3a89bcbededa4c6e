"""Will a run fit in memory? An estimate made before anything is allocated, so that a size that
cannot fit is refused with one line instead of a MemoryError halfway (and a half-made --out).

    weights          P = parameter_count(config)                    the family spec's tensor shapes, summed
                                                                    (GPT-2: V·C + T·C + L·(12C² + 13C) + 2C)
    training state   3·P_trainable                                  gradient + AdamW's two moments
    activations      L·(ACT·B·T·C + ATT·B·H·T²) + B·T·V             kept for the backward pass

``ACT`` counts the (B, T, C)-sized arrays a block keeps for its backward pass (ln_1, q/k/v,
attention output, projections, residuals, ln_2, the 4C-wide MLP input and GELU output, and
gradients in flight); ``ATT`` the (B, H, T, T) ones (attention probabilities and their gradient);
the last term is one (B, T, V) array (training's fused LM head never holds them all). Evaluation
keeps one layer's activations of a micro-batch b and three (b, T, V) arrays (logits, their softmax
and its log), with b from ``training.evaluation.micro_batch``. All in bytes of the dtype.
Calibrated against tracemalloc's peak over a training step (4×128 wide at T 256, 2×256 at T 512
with LoRA, 2×64 with V 5000): the estimate came within 25% of each. It refuses what is far out of
reach (terabytes for --n-embd 100000), not what is close.
"""

import os

from .. import backend
from ..models import family_of
from ..training.evaluation import micro_batch

ACT, ATT, FIT_FRACTION = 16, 2, 0.7


def parameter_count(config):
    """The parameters of the model ``config`` describes, from its family's spec (models/)."""
    return family_of(config).parameter_count(config)


def run_bytes(config, batch_size, block_size, n_trainable, itemsize=4, training=True):
    """(total, parts): the estimated peak bytes of a training step (or an evaluation)."""
    s = family_of(config).sizes(config)
    B, T, C, L, H, V = batch_size, block_size, s.width, s.layers, s.heads, s.vocab_size
    if training:
        activations = L * (ACT * B * T * C + ATT * B * H * T * T) + B * T * V
    else:
        b = micro_batch(B, T, V, itemsize)
        activations = ACT * b * T * C + ATT * b * H * T * T + 3 * b * T * V
    parts = {"weights": parameter_count(config) * itemsize,
             "gradients and AdamW state": 3 * n_trainable * itemsize if training else 0,
             "activations": itemsize * activations}
    return sum(parts.values()), parts


def available_bytes():
    """Memory this process can still take: the GPU's free memory on cupy, else the host's
    MemAvailable (Linux), else its physical memory; None where neither can be read."""
    if backend.get_backend() == "cupy":
        return int(backend.xp.cuda.runtime.memGetInfo()[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def format_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def check_fits(config, batch_size, block_size, n_trainable, itemsize=4, training=True):
    """A ValueError with the estimate when the run would not fit in the memory available."""
    total, parts = run_bytes(config, batch_size, block_size, n_trainable, itemsize, training)
    free = available_bytes()
    if free is not None and total > free:
        sizes = family_of(config).sizes(config)
        detail = ", ".join(f"{name} {format_bytes(b)}" for name, b in parts.items() if b)
        raise ValueError(f"this run needs about {format_bytes(total)} ({detail}; {batch_size} windows × "
                         f"{block_size} tokens a pass, {sizes.layers} layers × {sizes.width} wide) but only "
                         f"{format_bytes(free)} is available; use a smaller --block-size or model, more "
                         f"--grad-accum-steps (the same update in smaller micro-batches) or a smaller --batch-size")
    return total


def fitting_sizes(config, batch_size, block_size, n_trainable, itemsize=4, training=True, typed=(), accum=1):
    """(grad_accum_steps, block_size) within FIT_FRACTION of the memory available, for ``batch_size``
    windows a step (this process's): the batch is kept and split into more micro-batches (twice as
    many each time, a micro-batch of ceil(batch / steps) windows) while the estimate is above it,
    which leaves the update as it was; then the window is halved. An option in ``typed`` (the
    user's own: "grad_accum_steps", "block_size") is left as it is."""
    free = available_bytes()
    budget = FIT_FRACTION * free if free is not None else float("inf")

    def needed(a, t):
        return run_bytes(config, -(-batch_size // a), t, n_trainable, itemsize, training)[0]

    while needed(accum, block_size) > budget and -(-batch_size // accum) > 1 and "grad_accum_steps" not in typed:
        accum = min(batch_size, 2 * accum)
    while needed(accum, block_size) > budget and block_size > 64 and "block_size" not in typed:
        block_size //= 2
    return accum, block_size
