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
    anchor_labels = labels[:, anchors].T  # [B, L]
    anchor_labels = torch.where(anchor_labels >= 0, anchor_labels, -2)  # -2 matches no candidate label
    candidate_labels = torch.where(candidates >= 0, labels[:, candidates.clamp(min=0)], -1)  # [L, M], -1: none
    same = anchor_labels.unsqueeze(2) == candidate_labels.unsqueeze(0)  # [B, L, M]: both accepted and equal
    same &= (anchors.unsqueeze(1) != candidates.unsqueeze(0)).unsqueeze(1)  # not the anchor's own sample
    # [L, B, M] view of [B, L, M] memory: the loss's per-level dot products (an einsum over b)
    # then read each anchor's levels contiguously, without a transposed copy
    return same.permute(1, 0, 2)


def any_level(mask: torch.Tensor) -> torch.Tensor:
    """Pairs detected at any level.

    Args:
        mask: ``[L, B, M]`` bool, as from :func:`false_negative_mask`.

    Returns:
        ``[B, M]`` bool.
    """
    return mask.any(dim=0)


def pair_uniform(anchor_ids: torch.Tensor, candidate_ids: torch.Tensor, seed: int) -> torch.Tensor:
    """A uniform number in ``[0, 1)`` for every (anchor, candidate) pair, the same for ``(i, j)`` and ``(j, i)``.

    A fixed hash of the unordered pair of dataset indices and the seed (splitmix64 steps on
    int64 tensors), so a pair gets the same number at every step, on every rank and device.

    Args:
        anchor_ids: ``[B]`` long; candidate_ids: ``[M]`` long (negative ids are allowed).
        seed: the run's seed.

    Returns:
        ``[B, M]`` float64 on the device of ``anchor_ids``.
    """
    a = anchor_ids.long().unsqueeze(1)
    c = candidate_ids.to(anchor_ids.device).long().unsqueeze(0)
    low, high = torch.minimum(a, c), torch.maximum(a, c)
    x = low * 0x9E3779B1 + high * 0x85EBCA77 + (int(seed) & 0xFFFF_FFFF) * 0xC2B2AE3D
    for mul in (0x7FB5D329728EA185 - (1 << 63), 0x81DADEF4BC2DD44D - (1 << 64)):  # int64 wrap-around products
        x = (x ^ ((x >> 31) & 0x1_FFFF_FFFF)) * mul
    x = x ^ ((x >> 29) & 0x7_FFFF_FFFF)
    return ((x >> 11) & ((1 << 53) - 1)).double() / float(1 << 53)


def partner_classes(labels: torch.Tensor, precision: float, recall: float, seed: int) -> tuple[torch.Tensor, float]:
    """Confusable class pairs and the rate at which their sample pairs are falsely detected.

    Places the classes on a circle in a seeded random order; classes within circular distance
    ``d`` are partners (a symmetric relation standing in for confusable classes such as shirt and
    T-shirt). A same-class pair is detected with probability ``recall`` and a partner-class pair
    with probability ``q``; ``d`` is the smallest distance for which the ``q`` that gives the
    expected pair ``precision`` is at most 1.

    Args:
        labels: ``[N]`` long true classes (>= 0) of the samples whose pairs are counted.
        precision, recall: the targets, in (0, 1].

    Returns:
        ``(partners [C, C] bool, q)``; ``q = 0`` (no partners) when ``precision == 1``.

    Raises:
        ValueError: the targets cannot be reached (precision below what detecting every pair of
            every class pair would give).
    """
    if not (0 < precision <= 1 and 0 < recall <= 1):
        raise ValueError(f"precision and recall must be in (0, 1], got {precision}, {recall}")
    counts = torch.bincount(labels, minlength=int(labels.max()) + 1).double()
    classes = len(counts)
    same = float((counts * (counts - 1)).sum())  # ordered same-class pairs
    partners = torch.zeros(classes, classes, dtype=torch.bool)
    if precision == 1:
        return partners, 0.0
    rank = torch.randperm(classes, generator=torch.Generator().manual_seed(int(seed))).argsort()
    gap = (rank.unsqueeze(0) - rank.unsqueeze(1)).abs()
    circular = torch.minimum(gap, classes - gap)
    for distance in range(1, classes // 2 + 1):
        partners = (circular >= 1) & (circular <= distance)
        cross = float((counts.unsqueeze(0) * counts.unsqueeze(1))[partners].sum())
        q = recall * same * (1 - precision) / (precision * cross)
        if q <= 1:
            return partners, q
    raise ValueError(f"pair precision {precision} is unreachable at recall {recall} with {classes} classes; "
                     f"raise detection.oracle_precision")


def noisy_oracle_mask(anchor_ids: torch.Tensor, candidate_ids: torch.Tensor, labels: torch.Tensor,
                      partners: torch.Tensor, recall: float, false_rate: float, seed: int) -> torch.Tensor:
    """Detected pairs of a noisy oracle: true labels degraded to a chosen pair precision and recall.

    Among pairs of samples that both carry an accepted label, a same-class pair is detected with
    probability ``recall`` and a pair of partner classes (:func:`partner_classes`) with
    probability ``false_rate``; the draw is :func:`pair_uniform`, fixed per pair.

    Args:
        anchor_ids: ``[B]``; candidate_ids: ``[M]`` (-1: empty slot).
        labels: ``[N]`` long accepted true classes, -1 where not accepted.
        partners: ``[C, C]`` bool; recall, false_rate: probabilities.

    Returns:
        ``[B, M]`` bool on the device of ``labels``.
    """
    anchors = anchor_ids.to(labels.device)
    candidates = candidate_ids.to(labels.device)
    a = labels[anchors].unsqueeze(1)
    c = torch.where(candidates >= 0, labels[candidates.clamp(min=0)], -1).unsqueeze(0)
    both = (a >= 0) & (c >= 0) & (anchors.unsqueeze(1) != candidates.unsqueeze(0))
    u = pair_uniform(anchors, candidates, seed)
    partner = partners.to(labels.device)[a.clamp(min=0), c.clamp(min=0)]
    return both & (((a == c) & (u < recall)) | (partner & (u < false_rate)))


KEEP_PAIRS = ("all", "false_negatives", "true_negatives")
"""Values of ``detection.keep_pairs``: which of a detector's pairs the loss sees (an ablation with labels)."""


def keep_detected_pairs(masks: torch.Tensor, anchor_ids: torch.Tensor, candidate_ids: torch.Tensor,
                        classes: torch.Tensor, keep: str) -> torch.Tensor:
    """A detector's ``masks [L, B, M]`` kept to its false negatives (same class) or its true negatives.

    Args:
        masks: ``[L, B, M]`` bool detected pairs.
        anchor_ids: ``[B]`` long dataset ids; candidate_ids: ``[M]`` long, -1 for an empty slot.
        classes: ``[N]`` long true class of every sample.
        keep: one of :data:`KEEP_PAIRS`: ``all`` returns ``masks``; ``false_negatives`` keeps the pairs of the
            same class, ``true_negatives`` those of different classes (an empty slot is never kept).

    Returns:
        ``[L, B, M]`` bool on ``masks``' device.
    """
    if keep not in KEEP_PAIRS:
        raise ValueError(f"keep must be one of {KEEP_PAIRS}, got {keep!r}")
    if keep == "all":
        return masks
    classes = classes.to(masks.device)
    filled = candidate_ids >= 0
    same = classes[anchor_ids.to(masks.device)][:, None] == classes[candidate_ids.clamp(min=0).to(masks.device)][None]
    wanted = (same if keep == "false_negatives" else ~same) & filled.to(masks.device)[None]
    return masks & wanted[None]
