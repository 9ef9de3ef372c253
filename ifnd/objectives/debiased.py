"""Debiased contrastive loss (Chuang et al., NeurIPS 2020; original code: chingyaoc/DCL).

The negatives of an anchor are drawn from the whole data, so a share ``tau_plus`` of them
(the class prior) are in fact of the anchor's class. DCL corrects the negative term by the
positive's similarity, which stands for those hidden positives:

    Ng = max( (sum_neg e^{l_j} - tau_plus * N * e^{l_pos}) / (1 - tau_plus),  N * e^{-1/t} )
    loss = -log( e^{l_pos} / (e^{l_pos} + Ng) )

with ``N`` the number of negatives and ``t`` the temperature (``e^{-1/t}`` is the smallest
value ``e^{l}`` takes for unit vectors, so ``Ng`` never drops below what ``N`` negatives can
sum to). HCL (:mod:`ifnd.objectives.hard_negatives`) is the same estimator with each negative
weighted by its hardness ``e^{beta l_j}``; ``beta = 0`` is DCL, and ``tau_plus = 0`` is InfoNCE.

Under our masks: the negatives are the kept candidates that are not positives, ``N`` counts
them per row. A row with several positives (attraction) uses the paper's estimator for ``M``
positives, the mean ``e^{l_p}`` over them, in the correction, and averages the log-likelihood
over its positives against all of them plus ``Ng`` (``info_nce``'s, i.e. SupCon's L_out, form):
with ``tau_plus = 0`` the loss is :func:`ifnd.losses.info_nce` under any masks.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from ifnd.config import ConfigError
from ifnd.losses import LossMasks
from ifnd.objectives.rows import method_temperature, negatives, positive_mean, row_sum


def debiased_contrastive(logits: torch.Tensor, masks: LossMasks, temperature: float, tau_plus: float,
                         beta: float = 0.0) -> torch.Tensor:
    """Mean debiased (``beta > 0``: hardness-weighted) contrastive loss over anchors (and levels).

    Args:
        logits: ``[B, M]`` cosine similarities / ``temperature``.
        masks: the rows' kept candidates and positives (:class:`ifnd.losses.LossMasks`).
        temperature: the temperature of ``logits`` (for the floor ``N e^{-1/t}``).
        tau_plus: class prior, in ``[0, 1)``.
        beta: HCL's concentration; 0 weights every negative alike (DCL).

    Computed in float32, with every exponential shifted by the row's largest logit (exact).
    As in the original code, the hardness weights are not detached.

    Returns:
        Scalar loss.
    """
    logits = logits.float()
    shift = logits.detach().amax(-1, keepdim=True)                  # [B, 1]
    scaled = (logits - shift).exp()                                 # [B, M]
    negative = negatives(logits, masks)                             # [(L,) B, M]
    count = negative.sum(-1)                                        # N, [(L,) B]
    # e^{beta l}, up to a row constant (ones when beta = 0, also where a logit is -inf)
    importance = (beta * (logits - shift)).exp() if beta else torch.ones_like(logits)
    # N * sum_j w_j e^{l_j} / sum_j w_j: HCL's reweighted sum, the plain sum when beta = 0
    reweighted = count * row_sum(negative, importance * scaled) / row_sum(negative, importance).clamp(min=1e-30)
    corrected = (reweighted - tau_plus * count * positive_mean(scaled, masks)) / (1.0 - tau_plus)
    floor = count * torch.exp(-1.0 / temperature - shift.squeeze(-1))
    estimate = torch.maximum(corrected, floor)                      # Ng / e^{shift}
    positive_sum = row_sum(masks.positives.float(), scaled)
    return ((positive_sum + estimate).log() + shift.squeeze(-1) - positive_mean(logits, masks)).mean()


def check_tau_plus(tau_plus: float) -> float:
    """``tau_plus`` if it is a class prior in ``[0, 1)``; otherwise a one-line error naming the key."""
    if not 0.0 <= tau_plus < 1.0 or math.isnan(tau_plus):
        raise ConfigError(f"objective.tau_plus must be in [0, 1) (a class prior; DCL's default is 0.1), got {tau_plus}")
    return tau_plus


def build(cfg: Any) -> Callable[[torch.Tensor, LossMasks], torch.Tensor]:
    """DCL with ``objective.tau_plus`` at the method's temperature."""
    tau_plus, temperature = check_tau_plus(float(cfg.get("objective.tau_plus"))), method_temperature(cfg)

    def loss(logits: torch.Tensor, masks: LossMasks) -> torch.Tensor:
        return debiased_contrastive(logits, masks, temperature, tau_plus)

    return loss
