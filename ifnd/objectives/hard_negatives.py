"""Hard-negative contrastive loss, HCL (Robinson et al., ICLR 2021; original code: joshr17/HCL).

Negatives are importance-weighted toward the hard ones, the weight of negative ``j`` being
``e^{beta l_j}`` normalised to mean 1 over the row's negatives, and the weighted sum is then
debiased as in DCL (:func:`ifnd.objectives.debiased.debiased_contrastive`, which computes both):

    Ng = max( (N * sum_j w_j e^{l_j} / sum_j w_j - tau_plus * N * e^{l_pos}) / (1 - tau_plus),  N e^{-1/t} )

``beta = 0`` gives DCL; ``beta = 0, tau_plus = 0`` gives InfoNCE. The weights carry gradient, as
in the original. Several positives and the masks are treated as in DCL.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from ifnd.config import ConfigError
from ifnd.losses import LossMasks
from ifnd.objectives.debiased import check_tau_plus, debiased_contrastive
from ifnd.objectives.rows import method_temperature


def build(cfg: Any) -> Callable[[torch.Tensor, LossMasks], torch.Tensor]:
    """HCL with ``objective.beta`` and ``objective.tau_plus`` at the method's temperature."""
    beta = float(cfg.get("objective.beta"))
    if beta < 0 or math.isnan(beta):
        raise ConfigError(f"objective.beta must be >= 0 (HCL's concentration; 0 is DCL, their default 1.0), got {beta}")
    tau_plus, temperature = check_tau_plus(float(cfg.get("objective.tau_plus"))), method_temperature(cfg)

    def loss(logits: torch.Tensor, masks: LossMasks) -> torch.Tensor:
        return debiased_contrastive(logits, masks, temperature, tau_plus, beta)

    return loss
