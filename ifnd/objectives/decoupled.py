"""Decoupled contrastive loss (Yeh et al., ECCV 2022), as lightly's ``DCLLoss`` / ``DCLWLoss``.

The positive leaves the denominator: per row, ``-w * l_pos + log sum_{negatives} e^{l_j}``.
``decoupled`` has ``w = 1`` (lightly's ``DCLLoss``); ``decoupled_weighted`` has the negative
von Mises-Fisher weight ``w = 2 - R * softmax_rows(s_pos / sigma)`` over the ``R`` rows of the
batch, from the positive's cosine similarity ``s_pos``, detached (lightly's ``DCLWLoss``).

lightly's classes take the two views' embeddings (the SimCLR 2N layout) and no mask, so they
cannot run on MoCo's queue or drop detected false negatives; the math is written here on our
``[B, M]`` logits and masks, and equals lightly's on the SimCLR layout with no masks (tested).
Under our masks the denominator is the row's negatives (kept and not positive): detected false
negatives leave it with elimination, and with attraction they are positives, so they leave it
too and join the positive term, which averages ``l_p`` over the row's positives (the weight of
``decoupled_weighted`` then uses their mean similarity).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from ifnd.config import ConfigError
from ifnd.losses import LossMasks
from ifnd.objectives.rows import method_temperature, negatives, positive_mean, row_sum


def decoupled_contrastive(logits: torch.Tensor, masks: LossMasks,
                          positive_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean decoupled contrastive loss over anchors (and levels).

    Args:
        logits: ``[B, M]`` cosine similarities / temperature.
        masks: the rows' kept candidates and positives.
        positive_weights: ``[(L,) B]`` weight of each row's positive term, or None (1).

    Computed in float32 (log-sum-exp shifted by the row's largest logit). A row with no
    negative (MoCo's first step, before the queue holds a key) has nothing to contrast and
    counts 0, as in ``info_nce``, instead of an unbounded ``-l_pos``. Returns a scalar.
    """
    logits = logits.float()
    shift = logits.detach().amax(-1, keepdim=True)                  # [B, 1]
    negative = negatives(logits, masks)                             # [(L,) B, M]
    negative_sum = row_sum(negative, (logits - shift).exp())        # [(L,) B]
    attraction = positive_mean(logits, masks)                       # [(L,) B]
    if positive_weights is not None:
        attraction = positive_weights * attraction
    rows = negative_sum.clamp(min=torch.finfo(negative_sum.dtype).tiny).log() + shift.squeeze(-1) - attraction
    return torch.where(negative.sum(-1) > 0, rows, torch.zeros_like(rows)).mean()


def von_mises_fisher_weights(logits: torch.Tensor, masks: LossMasks, temperature: float, sigma: float) -> torch.Tensor:
    """``[(L,) B]`` DCLW's weights ``2 - R softmax(s_pos / sigma)`` over the ``R`` rows, detached.

    ``s_pos`` is the row's (mean) positive cosine similarity, ``logits * temperature``. On the
    SimCLR layout a pair's two rows share ``s_pos``, so this is lightly's per-view ``2 - B softmax``.
    """
    similarity = positive_mean(logits.detach().float(), masks) * temperature
    return 2.0 - similarity.shape[-1] * torch.softmax(similarity / sigma, dim=-1)


def build(cfg: Any) -> Callable[[torch.Tensor, LossMasks], torch.Tensor]:
    """The decoupled loss, no weighting (lightly's ``DCLLoss``); it has no keys of its own."""
    del cfg  # the logits already carry the temperature

    def loss(logits: torch.Tensor, masks: LossMasks) -> torch.Tensor:
        return decoupled_contrastive(logits, masks)

    return loss


def build_weighted(cfg: Any) -> Callable[[torch.Tensor, LossMasks], torch.Tensor]:
    """The decoupled loss with DCLW's weights at ``objective.sigma`` (lightly's ``DCLWLoss``)."""
    sigma, temperature = float(cfg.get("objective.sigma")), method_temperature(cfg)
    if not sigma > 0 or math.isinf(sigma):
        raise ConfigError(f"objective.sigma must be a positive number (DCLW's weight temperature; lightly's default 0.5), got {sigma}")

    def loss(logits: torch.Tensor, masks: LossMasks) -> torch.Tensor:
        return decoupled_contrastive(logits, masks, von_mises_fisher_weights(logits, masks, temperature, sigma))

    return loss
