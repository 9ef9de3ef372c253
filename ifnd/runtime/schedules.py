"""Learning-rate multipliers as pure functions of the global step (the engine wraps them in ``LambdaLR``)."""

from __future__ import annotations

import math
from typing import Sequence


def warmup_cosine(step: int, total_steps: int, warmup_steps: int) -> float:
    """LR multiplier: linear from 0 to 1 over ``warmup_steps``, then cosine to 0 at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def step_decay(step: int, steps_per_epoch: int, decay: float, milestones: Sequence[int]) -> float:
    """LR multiplier ``decay ** (number of milestone epochs <= the step's epoch)``."""
    epoch = step // max(1, steps_per_epoch)
    return decay ** sum(epoch >= m for m in milestones)


def scaled_lr(base_lr: float, global_batch: int, rule: str) -> float:
    """``rule="linear"``: ``base_lr`` is for a global batch of 256 and scales with it; ``"none"``: as given."""
    return base_lr * global_batch / 256 if rule == "linear" else base_lr
