"""Masks of detected false negatives between anchors and candidate negatives.

Method notes, step 5: a candidate that shares an accepted pseudo-label with the anchor is a
detected false negative. The functions are pure and vectorised; everything runs on the
device of the label table.
"""

from __future__ import annotations

import torch


def false_negative_mask(
    anchor_ids: torch.Tensor, candidate_ids: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Per level, which candidates share an accepted pseudo-label with each anchor.

    Args:
        anchor_ids: ``[B]`` long dataset index of each anchor.
        candidate_ids: ``[M]`` long dataset index of each candidate; -1 marks an empty slot
            (e.g. a queue entry never written).
        labels: ``[L, N]`` long pseudo-label table, one row per level; -1 means no accepted
            pseudo-label.

    Returns:
        ``[L, B, M]`` bool on the device of ``labels``; True where the candidate slot is
        filled, is not the anchor's own sample, and anchor and candidate carry the same
        accepted (>= 0) label at that level.
    """
    if labels.dim() != 2:
        raise ValueError(f"labels must be an [L, N] table, got shape {tuple(labels.shape)}")
    anchors = anchor_ids.to(labels.device)
    candidates = candidate_ids.to(labels.device)
    filled = candidates >= 0
    anchor_labels = labels[:, anchors]  # [L, B]
    candidate_labels = torch.where(filled, labels[:, candidates.clamp(min=0)], -1)  # [L, M]
    same = anchor_labels.unsqueeze(2) == candidate_labels.unsqueeze(1)
    accepted = (anchor_labels >= 0).unsqueeze(2) & (candidate_labels >= 0).unsqueeze(1)
    other_sample = anchors.unsqueeze(1) != candidates.unsqueeze(0)  # [B, M]
    return same & accepted & other_sample


def any_level(mask: torch.Tensor) -> torch.Tensor:
    """Pairs detected at any level.

    Args:
        mask: ``[L, B, M]`` bool, as from :func:`false_negative_mask`.

    Returns:
        ``[B, M]`` bool.
    """
    return mask.any(dim=0)
