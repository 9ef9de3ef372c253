"""Pretraining optimizers: SGD, or lightly's LARS for large batches (the schedule is the engine's)."""

from __future__ import annotations

from typing import Any, Iterable

import torch
from lightly.utils.lars import LARS


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: Any, lr: float) -> torch.optim.Optimizer:
    """SGD, or LARS, from ``cfg.train`` (``optimizer``, ``momentum``, ``weight_decay``) at learning rate ``lr``."""
    train = cfg.train
    params = [p for p in params if p.requires_grad]
    if train.optimizer == "lars":
        return LARS(params, lr=lr, momentum=train.momentum, weight_decay=train.weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=train.momentum, weight_decay=train.weight_decay)
