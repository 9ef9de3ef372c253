"""Contrastive objectives of pretraining, by ``objective.name``, built by :func:`build_objective`.

An objective is a callable ``(logits [B, M], masks: LossMasks) -> scalar loss``: ``logits`` are the
similarities / temperature of the anchors to the candidates (SimCLR's 2N x 2N rows or MoCo's
``[B, 1+K]``), ``masks`` the candidates of each denominator and the positives, after the detector's
false negatives (:class:`~ifnd.losses.LossMasks`). Adding one: a file with a factory
``build(cfg) -> Objective``, one line in :data:`OBJECTIVES`, and its ``objective.*`` keys in
:mod:`ifnd.config`.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from ifnd.config import ConfigError
from ifnd.losses import LossMasks
from ifnd.objectives import infonce

Objective = Callable[[torch.Tensor, LossMasks], torch.Tensor]

OBJECTIVES: dict[str, Callable[[Any], Objective]] = {
    "infonce": infonce.build,
}


def build_objective(cfg: Any) -> Objective:
    """The objective named by ``cfg.objective.name``."""
    name = cfg.objective.name
    if name not in OBJECTIVES:
        raise ConfigError(f"objective.name={name!r} is not an objective; choose one of {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name](cfg)
