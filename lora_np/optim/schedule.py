"""Learning-rate schedule: linear warmup, then cosine decay to a floor.

    lr(t) = max_lr · (t+1)/warmup                                    for t < warmup
    lr(t) = min_lr + ½ (max_lr - min_lr)(1 + cos(π · (t - warmup)/(total - warmup)))   afterwards
"""

import math


def cosine_with_warmup(step, max_lr, warmup_steps, total_steps, min_lr=0.0):
    """The learning rate at ``step`` (0-based); constant at min_lr after total_steps."""
    if warmup_steps < 0 or total_steps <= 0 or warmup_steps > total_steps:
        raise ValueError(f"need 0 ≤ warmup_steps ≤ total_steps and total_steps > 0; got "
                         f"warmup_steps={warmup_steps}, total_steps={total_steps}")
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + 0.5 * (max_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


class WarmupCosine:
    """Sets every group's lr from cosine_with_warmup; call ``step()`` once per optimizer step."""

    def __init__(self, optimizer, warmup_steps, total_steps, min_lr_ratio=0.1):
        self.optimizer = optimizer
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.warmup_steps, self.total_steps, self.min_lr_ratio = warmup_steps, total_steps, min_lr_ratio
        self.last_step = -1
        cosine_with_warmup(0, 1.0, warmup_steps, total_steps)  # validates the arguments
        self.step()

    def step(self):
        self.last_step += 1
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = cosine_with_warmup(self.last_step, base, self.warmup_steps, self.total_steps,
                                             base * self.min_lr_ratio)
        return self.optimizer.param_groups[0]["lr"]

    def state_dict(self):
        return {"last_step": self.last_step, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state):
        self.last_step = int(state["last_step"]) - 1
        self.base_lrs = list(state["base_lrs"])
        self.step()
