"""Contrastive methods of pretraining, one class per ``method``, built by :func:`build_method`.

Adding one: a file with a :class:`~ifnd.pretrain.methods.base.Method` subclass (its transform, model,
step and extra state), one line in :data:`METHODS`, and its name and keys in :mod:`ifnd.config`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ifnd.config import ConfigError
from ifnd.pretrain.methods.base import Method
from ifnd.pretrain.methods.moco import MoCo
from ifnd.pretrain.methods.simclr import SimCLR

METHODS: dict[str, type[Method]] = {"simclr": SimCLR, "moco": MoCo}


def method_class(cfg: Any) -> type[Method]:
    """The class of ``cfg.method``."""
    if cfg.method not in METHODS:
        raise ConfigError(f"method={cfg.method!r} is not a method; choose one of {', '.join(METHODS)}")
    return METHODS[cfg.method]


def build_method(cfg: Any, device: torch.device, rank: int = 0) -> Method:
    """The method of ``cfg.method``, its extra state on ``device``."""
    return method_class(cfg)(cfg, device, rank)


def build_model(cfg: Any) -> nn.Module:
    """The model of ``cfg.method`` on the backbone named by ``cfg.model.backbone``."""
    return method_class(cfg).build_model(cfg)


__all__ = ["METHODS", "Method", "build_method", "build_model", "method_class"]
