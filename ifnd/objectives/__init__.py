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
from ifnd.objectives import debiased, decoupled, hard_negatives, infonce

Objective = Callable[[torch.Tensor, LossMasks], torch.Tensor]

OBJECTIVES: dict[str, Callable[[Any], Objective]] = {
    "infonce": infonce.build,
    "debiased": debiased.build,
    "hard_negatives": hard_negatives.build,
    "decoupled": decoupled.build,
    "decoupled_weighted": decoupled.build_weighted,
}


def build_objective(cfg: Any) -> Objective:
    """The objective named by ``cfg.objective.name``."""
    name = cfg.objective.name
    if name not in OBJECTIVES:
        raise ConfigError(f"objective.name={name!r} is not an objective; choose one of {', '.join(OBJECTIVES)}")
    if name != "infonce" and cfg.get("negatives.sampler") == "fne":
        # FNE removes candidates as -inf logits, which DCL / HCL / the decoupled loss would still count
        raise ConfigError(f"objective.name={name} does not combine with negatives.sampler=fne (FNE's weights are "
                          "logit offsets made for InfoNCE); use objective.name=infonce or negatives.sampler=none")
    return OBJECTIVES[name](cfg)
