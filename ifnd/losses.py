"""InfoNCE with false-negative elimination or attraction, and its SimCLR / MoCo layouts.

lightly's ``NTXentLoss`` takes no mask, so it cannot drop or attract detected false
negatives. :func:`info_nce` under the masks of :func:`loss_masks` is the one loss of every
method and detection mode (:func:`masked_info_nce` is both in one call); with no false
negatives it equals lightly's ``NTXentLoss`` (tested), so the baseline and the detectors
share one code path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ifnd.falseneg.masks import any_level


@dataclass
class LossMasks:
    """Which candidates a row's InfoNCE sums over and which are its positives, as float weights.

    ``kept``: ``[(L,) B, M]`` 1.0 for the candidates in the denominator, or None for all of them;
    ``positives``: ``[(L,) B, M]`` 1.0 for the positives (the rows' true positives and, with
    attraction, the detected false negatives). A leading ``L`` (one slice per granularity
    level) averages the loss over the levels. Built once by :func:`loss_masks` and shared by
    every logit matrix of a step that has the same anchors and candidates (MoCo's two directions).
    """

    kept: torch.Tensor | None
    positives: torch.Tensor


def eliminate(positive: torch.Tensor, detected: torch.Tensor,
              kept: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Elimination: detected false negatives leave the denominator (IFND's loss).

    Args:
        positive: ``[B, M]`` bool, the rows' true positives.
        detected: ``[(L,) B, M]`` bool, detected false negatives that are not true positives.
        kept: ``[B, M]`` bool, the candidates of the denominator, or None for all of them.

    Returns:
        ``(kept, positives)``, bool, ``[(L,) B, M]`` (kept may stay None).
    """
    return (~detected if kept is None else kept & ~detected), positive


def attract(positive: torch.Tensor, detected: torch.Tensor,
            kept: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Attraction: detected false negatives count as further positives (SupCon's L_out); arguments and
    result as :func:`eliminate`."""
    positives = positive | detected
    return kept, (positives if kept is None else positives & kept)


# detection.loss -> how a row's denominator and positives take its detected false negatives
MASK_POLICIES = {"elimination": eliminate, "attraction": attract}
MODES = tuple(MASK_POLICIES)


def loss_masks(
    positive_mask: torch.Tensor,
    false_negative_mask: torch.Tensor | None = None,
    exclude_mask: torch.Tensor | None = None,
    mode: str = "elimination",
) -> LossMasks:
    """The :class:`LossMasks` of InfoNCE with detected false negatives removed or attracted.

    Args:
        positive_mask: ``[B, M]`` bool, the anchor's true positive(s) (at least one a row).
        false_negative_mask: ``[B, M]`` (or ``[L, B, M]``) bool, detected false negatives, or None.
        exclude_mask: ``[B, M]`` bool, candidates that are never part of the loss
            (the anchor itself in SimCLR's 2N x 2N layout), or None.
        mode: a policy of :data:`MASK_POLICIES`: ``elimination`` drops false negatives from the
            denominator (IFND eq.); ``attraction`` counts them as further positives and averages the
            log-likelihood over all positives of a row (SupCon's L_out).
    """
    if mode not in MASK_POLICIES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    kept = None if exclude_mask is None else ~exclude_mask  # None: every column
    positives = positive_mask
    if false_negative_mask is not None:
        kept, positives = MASK_POLICIES[mode](positive_mask, false_negative_mask & ~positive_mask, kept)
    return LossMasks(None if kept is None else kept.float(), positives.float())


def level_masks(positive: torch.Tensor, masks: torch.Tensor | None, exclude: torch.Tensor | None, mode: str,
                combine: str = "average") -> LossMasks:
    """The :class:`LossMasks` of the granularity levels of ``masks [L, B, M]``.

    ``combine="average"``: the mean of the per-level losses, in one batched pass;
    ``"union"``: one loss whose false negatives are the pairs of any level.
    """
    if masks is not None and combine == "union":
        masks = any_level(masks)
    return loss_masks(positive, masks, exclude, mode)


def info_nce(logits: torch.Tensor, masks: LossMasks) -> torch.Tensor:
    """Mean InfoNCE over anchors (and levels) of ``logits [B, M]`` under ``masks``.

    Per row, the loss is ``log sum_{j kept} exp(l_j) - mean_{p positive} l_p``. The
    exponentials are taken once, on ``[B, M]``, shifted by the row's largest logit; each
    level's sum is then a masked dot product with them, so a level costs one pass over its
    mask (forward and backward) instead of a log-sum-exp of its own. Computed in float32
    (also under autocast). The shift is exact as long as a row's kept logits are not all more
    than ~87 below its largest one (with unit-norm embeddings: temperature above about
    0.025); below that the sum underflows and the loss becomes infinite. A ``-inf`` logit
    removes its candidate (FNE's zero sampling weights).

    Returns:
        Scalar loss.
    """
    logits = logits.float()
    shift = logits.detach().amax(-1, keepdim=True)  # [B, 1]
    scaled = (logits - shift).exp()                 # [B, M]
    total = scaled.sum(-1) if masks.kept is None else _row_dot(masks.kept, scaled)            # [(L,) B]
    finite = logits.clamp(min=torch.finfo(logits.dtype).min)  # a -inf logit (a candidate weighted 0) times 0 is NaN
    positive_mean = _row_dot(masks.positives, finite) / masks.positives.sum(-1).clamp(min=1)  # [(L,) B]
    return (total.log() + shift.squeeze(-1) - positive_mean).mean()


def masked_info_nce(
    logits: torch.Tensor,
    positive_mask: torch.Tensor,
    false_negative_mask: torch.Tensor | None = None,
    exclude_mask: torch.Tensor | None = None,
    mode: str = "elimination",
) -> torch.Tensor:
    """Mean InfoNCE over anchors, with detected false negatives removed or attracted.

    ``logits [B, M]`` are similarities / temperature between anchors and candidates; the masks
    are those of :func:`loss_masks` (a false-negative mask ``[L, B, M]`` averages the loss over
    its ``L`` levels in one pass). Returns the scalar :func:`info_nce`.
    """
    return info_nce(logits, loss_masks(positive_mask, false_negative_mask, exclude_mask, mode))


def _row_dot(mask: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``sum_m mask[..., b, m] * values[b, m]``: ``mask [(L,) B, M]``, ``values [B, M]`` -> ``[(L,) B]``."""
    return torch.einsum("...bm,bm->...b", mask, values)


def simclr_layout(z1: torch.Tensor, z2: torch.Tensor, ids: torch.Tensor, temperature: float):
    """NT-Xent's 2N x 2N layout.

    Args:
        z1, z2: normalised embeddings of the two views ``[B, D]``.
        ids: dataset indices ``[B]``.

    Returns:
        ``(logits [2B, 2B], positive_mask [2B, 2B], exclude_mask [2B, 2B], ids2 [2B])``:
        anchors and candidates are both the 2B views; ``ids2`` gives each row's and each
        column's dataset index (for false-negative masks).
    """
    z = torch.cat([z1, z2])
    n = z.shape[0]
    batch = z1.shape[0]
    logits = z @ z.T / temperature
    arange = torch.arange(n, device=z.device)
    positive = torch.zeros(n, n, dtype=torch.bool, device=z.device)
    positive[arange, (arange + batch) % n] = True
    exclude = torch.eye(n, dtype=torch.bool, device=z.device)
    return logits, positive, exclude, torch.cat([ids, ids])


def moco_layout(q: torch.Tensor, k: torch.Tensor, queue_keys: torch.Tensor, temperature: float):
    """MoCo's layout: column 0 is the key of the same image, then the queue.

    Args:
        q: queries ``[B, D]``; k: keys of the other view ``[B, D]``;
        queue_keys: ``[K, D]``.

    Returns:
        ``(logits [B, 1+K], positive_mask [B, 1+K])``.
    """
    l_pos = (q * k).sum(1, keepdim=True)
    l_neg = q @ queue_keys.T
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature
    positive = torch.zeros_like(logits, dtype=torch.bool)
    positive[:, 0] = True
    return logits, positive
