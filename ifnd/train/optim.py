"""Optimizers and the linear-warm-up cosine learning-rate schedule."""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch
from lightly.utils.lars import LARS


def warmup_cosine(step: int, total_steps: int, warmup_steps: int) -> float:
    """LR multiplier: linear from 0 to 1 over ``warmup_steps``, then cosine to 0 at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def scaled_lr(base_lr: float, global_batch: int) -> float:
    """Linear scaling rule: ``base_lr`` is for a global batch of 256."""
    return base_lr * global_batch / 256


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: Any, lr: float) -> torch.optim.Optimizer:
    """SGD, or lightly's LARS for large batches, from ``cfg.train``."""
    train = cfg.train
    params = [p for p in params if p.requires_grad]
    if train.optimizer == "lars":
        return LARS(params, lr=lr, momentum=train.momentum, weight_decay=train.weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=train.momentum, weight_decay=train.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step :func:`warmup_cosine` schedule (its position is in ``state_dict()``)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, total_steps, warmup_steps))
