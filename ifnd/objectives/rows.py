"""What the peer objectives share: the method's temperature and a row's negatives and positives.

Every objective of the registry is ``build(cfg) -> loss(logits [B, M], masks: LossMasks)``; the
peers read their masks the same way: a candidate is a *negative* of its row when it is kept
(``masks.kept``, None: every column) and not a positive (``masks.positives``: the true positive
and, with attraction, the detected false negatives). A leading level dimension ``L`` of the
masks gives one loss per level; the loss is the mean over levels and rows, as in ``info_nce``.
"""

from __future__ import annotations

from typing import Any

import torch

from ifnd.losses import LossMasks


def method_temperature(cfg: Any) -> float:
    """The temperature the logits were divided by: ``simclr.temperature`` or ``moco.temperature`` of ``cfg.method``."""
    return float(cfg.get(f"{cfg.method}.temperature"))


def negatives(logits: torch.Tensor, masks: LossMasks) -> torch.Tensor:
    """``[(L,) B, M]`` float: 1.0 for the kept candidates that are not positives of the row."""
    kept = torch.ones_like(logits) if masks.kept is None else masks.kept.float()
    return kept * (1.0 - masks.positives.float())


def row_sum(weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``sum_m weights[..., b, m] * values[b, m]``: ``weights [(L,) B, M]``, ``values [B, M]`` -> ``[(L,) B]``."""
    return torch.einsum("...bm,bm->...b", weights, values)


def positive_mean(values: torch.Tensor, masks: LossMasks) -> torch.Tensor:
    """``[(L,) B]``: the mean of ``values [B, M]`` over each row's positives."""
    positives = masks.positives.float()
    return row_sum(positives, values) / positives.sum(-1).clamp(min=1)
