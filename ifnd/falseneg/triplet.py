"""Triplet ranking losses on similarity matrices.

Hardest-negative VSE++ and the FNE-sampled triplet loss share one code path: pick
negative indices (:func:`hardest_negative_indices` or
:func:`ifnd.falseneg.bayes.sample_negatives`), score them with
:func:`triplet_from_indices` in each direction, and combine the two directions with
:func:`bidirectional_triplet_loss`.

Shapes: ``B`` anchors, ``N`` candidates, ``K`` negatives per anchor.
"""

from __future__ import annotations

from torch import Tensor


def triplet_from_indices(
    sims: Tensor, pos_sims: Tensor, neg_indices: Tensor, margin: float = 0.2
) -> Tensor:
    """Hinge ``[margin + s(a, n) - s(a, p)]_+`` per anchor, summed over its negatives.

    Args:
        sims: ``[B, N]`` float, anchor-candidate similarities.
        pos_sims: ``[B]`` float, each anchor's similarity to its own positive.
        neg_indices: ``[B, K]`` long, candidate columns used as negatives.
        margin: ranking margin (0.2 in VSE++ and FNE).

    Returns:
        ``[B]`` float, the per-anchor loss; gradients flow through ``sims`` and
        ``pos_sims``.
    """
    neg_sims = sims.gather(1, neg_indices)
    return (margin + neg_sims - pos_sims.unsqueeze(1)).clamp(min=0).sum(dim=1)


def hardest_negative_indices(sims: Tensor, positive_mask: Tensor, k: int = 1) -> Tensor:
    """The ``k`` most similar non-positive candidates of each anchor (VSE++ for ``k=1``).

    Args:
        sims: ``[B, N]`` float, anchor-candidate similarities.
        positive_mask: ``[B, N]`` bool, True where the candidate is a known positive.
        k: number of negatives per anchor.

    Returns:
        ``[B, k]`` long, candidate columns in decreasing order of similarity.

    Raises:
        ValueError: if some anchor has fewer than ``k`` non-positive candidates.
    """
    if bool(((~positive_mask).sum(dim=1) < k).any()):
        raise ValueError(f"every anchor needs at least {k} non-positive candidate(s)")
    masked = sims.detach().masked_fill(positive_mask, float("-inf"))
    return masked.topk(k, dim=1).indices


def bidirectional_triplet_loss(i2t_loss: Tensor, t2i_loss: Tensor) -> Tensor:
    """Sum of both directions' per-anchor losses divided by the batch size.

    Args:
        i2t_loss: ``[B]`` float, image-anchored losses.
        t2i_loss: ``[B]`` float, text-anchored losses.

    Returns:
        0-d float tensor.
    """
    if i2t_loss.shape != t2i_loss.shape or i2t_loss.dim() != 1:
        raise ValueError(
            f"expected two [B] losses of equal size, got {tuple(i2t_loss.shape)} and {tuple(t2i_loss.shape)}"
        )
    return (i2t_loss.sum() + t2i_loss.sum()) / i2t_loss.shape[0]
