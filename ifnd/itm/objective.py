"""Bidirectional triplet ranking loss with the negatives chosen among candidates.

Anchors are online embeddings; candidates are momentum embeddings (the batch, plus
the memory when used) with their image ids; an anchor's positive is the momentum
embedding of its own pair, so positive and negative similarities are measured alike
(online x momentum). Scoring the positive online x online lets the online encoders
collapse away from the lagging momentum ones (loss near 0, retrieval near chance on the
demo set). A candidate with the anchor's image id is a known positive and never
a negative. FNE sampling and the VSE++ hardest negative share this path: only the
:data:`NegativeSelector` differs.

Shapes: ``B`` pairs, ``N`` candidates, ``E`` embedding width, ``K`` negatives.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ifnd.falseneg.bayes import FNESampler, SampledNegatives, sample_negatives
from ifnd.models.ring_buffer import IdRingBuffer
from ifnd.falseneg.triplet import (
    bidirectional_triplet_loss,
    hardest_negative_indices,
    triplet_from_indices,
)

NegativeSelector = Callable[[Tensor, Tensor, Tensor], Tensor]
"""``(sims [B, N], pos_sims [B], positive_mask [B, N]) -> negative columns [B, K]``."""


class Candidates(NamedTuple):
    """Momentum embeddings the negatives are chosen from."""

    images: Tensor
    """``[N, E]`` image embeddings."""
    texts: Tensor
    """``[N, E]`` caption embeddings."""
    ids: Tensor
    """``[N]`` long image ids."""


class TripletOutput(NamedTuple):
    """Loss and the image ids of the chosen negatives."""

    loss: Tensor
    """0-d, both directions summed and divided by ``B``."""
    i2t_negative_ids: Tensor
    """``[B, K]`` image ids of the captions chosen as negatives of each image."""
    t2i_negative_ids: Tensor
    """``[B, K]`` ids of the images chosen as negatives of each caption."""
    candidate_ids: Tensor
    """``[N]`` image ids of the candidates (the columns the negatives were chosen from)."""


def gather_candidates(images: Tensor, texts: Tensor, ids: Tensor, memory: IdRingBuffer | None = None) -> Candidates:
    """The batch's momentum embeddings ``[B, E]`` (ids ``[B]``) first, then the memory's filled slots."""
    if memory is None:
        return Candidates(images, texts, ids)
    mem_images, mem_texts, mem_ids = memory.contents()
    return Candidates(torch.cat([images, mem_images.to(images)]), torch.cat([texts, mem_texts.to(texts)]),
                      torch.cat([ids, mem_ids]))


def hardest_selector(num_samples: int = 1) -> NegativeSelector:
    """VSE++: the ``num_samples`` most similar non-positive candidates."""
    return lambda sims, pos_sims, mask: hardest_negative_indices(sims, mask, k=num_samples)


def all_negatives_selector() -> NegativeSelector:
    """VSE0: every non-positive candidate (each row must have the same number of them, e.g. the in-batch
    layout with the pair itself as the only positive)."""

    def select(sims: Tensor, pos_sims: Tensor, mask: Tensor) -> Tensor:
        counts = (~mask).sum(1)
        if bool((counts != counts[0]).any()):
            raise ValueError("vse0 needs the same number of negatives in every row (the in-batch pair layout)")
        return torch.nonzero(~mask)[:, 1].view(len(mask), -1)

    return select


def uniform_selector(num_samples: int = 1, generator: torch.Generator | None = None) -> NegativeSelector:
    """A uniformly random non-positive candidate (the memory's ablation of FNE's weights)."""
    return lambda sims, pos_sims, mask: sample_negatives(sims, torch.ones_like(sims), mask, num_samples, generator)[0]


def fne_selector(sampler: FNESampler, num_samples: int = 1, generator: torch.Generator | None = None,
                 record: list[tuple[SampledNegatives, Tensor, bool]] | None = None) -> NegativeSelector:
    """Bayesian false-negative-aware draws (hardest while ``sampler`` is in warm-up).

    ``record``: each call appends ``(draws, positive mask [B, N], statistics ready)`` to it, for the
    per-epoch evidence that each part of FNE acts (:mod:`ifnd.itm.fne_monitor`).
    """

    def select(sims: Tensor, pos_sims: Tensor, mask: Tensor) -> Tensor:
        draws = sampler(sims, pos_sims, mask, num_samples, generator)
        if record is not None:
            record.append((draws, mask, sampler.stats.ready))
        return draws.indices

    return select


def similarities(images: Tensor, texts: Tensor, candidates: Candidates) -> tuple[Tensor, Tensor]:
    """Online anchors against candidates (momentum embeddings, or online ones in the in-batch layout).

    Args:
        images: ``[B, E]`` online image embeddings.
        texts: ``[B, E]`` online caption embeddings, row ``i`` paired with image ``i``.
        candidates: ``N >= B`` embeddings whose first ``B`` rows are the batch's pairs, in order.

    Returns:
        ``(i2t [B, N], t2i [B, N])``: images x candidate captions, captions x candidate images.
        Column ``i`` of row ``i`` is the anchor's positive.
    """
    return images @ candidates.texts.T, texts @ candidates.images.T


def in_batch_similarity(images: Tensor, texts: Tensor, momentum_images: Tensor, momentum_texts: Tensor) -> Tensor:
    """The ``[G, G]`` in-batch block of both directions, measured like the loss (online x momentum).

    Args:
        images, texts: ``[G, E]`` online embeddings of ``G`` pairs (the global batch under DDP).
        momentum_images, momentum_texts: ``[G, E]`` momentum embeddings of the same pairs.

    Returns:
        ``(images @ momentum_texts.T + (texts @ momentum_images.T).T) / 2``: row ``i`` is
        image ``i``, column ``j`` caption ``j``; the diagonal holds the pairs.
    """
    return (images @ momentum_texts.T + (texts @ momentum_images.T).T) / 2


def pair_mask(sims: Tensor) -> Tensor:
    """``[B, N]`` bool, true at column ``i`` of row ``i``: each anchor's own pair in the in-batch layout."""
    rows, columns = (torch.arange(n, device=sims.device) for n in sims.shape)
    return rows.unsqueeze(1) == columns.unsqueeze(0)


def directional_triplet(
    sims: Tensor, anchor_ids: Tensor, candidate_ids: Tensor, select: NegativeSelector, margin: float,
    pair_positive: bool = False,
) -> tuple[Tensor, Tensor]:
    """Triplet loss of one direction.

    Args:
        sims: ``[B, N]`` anchor-candidate similarities; ``sims[i, i]`` is anchor ``i``'s positive.
        anchor_ids: ``[B]`` image ids of the anchors.
        candidate_ids: ``[N]`` image ids of the candidates.
        select: chooses the negative columns.
        margin: ranking margin.
        pair_positive: only the pair itself (column ``i`` of row ``i``) is a positive, as in VSE++'s
            in-batch loss; otherwise every candidate with the anchor's image id.

    Returns:
        ``(loss [B], negative columns [B, K])``.
    """
    pos_sims = sims.diagonal()
    if pair_positive:
        positive = pair_mask(sims)
    else:
        positive = anchor_ids.unsqueeze(1) == candidate_ids.unsqueeze(0)
    negatives = select(sims, pos_sims, positive)
    return triplet_from_indices(sims, pos_sims, negatives, margin), negatives


def itm_triplet_loss(
    i2t: Tensor, t2i: Tensor, candidate_ids: Tensor, ids: Tensor, select: NegativeSelector, margin: float = 0.2,
    pair_positive: bool = False,
) -> TripletOutput:
    """Image-to-text plus text-to-image triplet loss, divided by ``B``.

    Args:
        i2t: ``[B, N]`` online images x momentum candidate captions (see :func:`similarities`).
        t2i: ``[B, N]`` online captions x momentum candidate images.
        candidate_ids: ``[N]`` image ids of the candidates.
        ids: ``[B]`` image ids of the pairs.
        select: chooses the negatives (the same selector in both directions).
        margin: ranking margin.
        pair_positive: see :func:`directional_triplet`.
    """
    i2t_loss, i2t_cols = directional_triplet(i2t, ids, candidate_ids, select, margin, pair_positive)
    t2i_loss, t2i_cols = directional_triplet(t2i, ids, candidate_ids, select, margin, pair_positive)
    return TripletOutput(bidirectional_triplet_loss(i2t_loss, t2i_loss), candidate_ids[i2t_cols], candidate_ids[t2i_cols],
                         candidate_ids)


def itm_info_nce_loss(i2t: Tensor, t2i: Tensor, candidate_ids: Tensor, temperature: float) -> TripletOutput:
    """Symmetric InfoNCE over the in-batch pairs (CLIP's objective): the pair is the one positive.

    Args:
        i2t: ``[B, G]`` online images x online captions of the global batch, column ``i`` of row ``i``
            the pair (see :func:`similarities` on the in-batch layout).
        t2i: ``[B, G]`` online captions x online images, same layout.
        candidate_ids: ``[G]`` image ids of the columns.
        temperature: softmax temperature.

    Returns:
        The cross-entropy of both directions summed and divided by ``B`` (the triplet losses'
        reduction), with the most similar non-pair column of each row as its reported negative
        (the one the softmax weighs most; used only by the same-class diagnostics).
    """
    targets = torch.arange(i2t.shape[0], device=i2t.device)
    loss = (F.cross_entropy(i2t / temperature, targets, reduction="sum")
            + F.cross_entropy(t2i / temperature, targets, reduction="sum")) / i2t.shape[0]
    pair, select = pair_mask(i2t), hardest_selector(1)
    return TripletOutput(loss, candidate_ids[select(i2t, i2t.diagonal(), pair)],
                         candidate_ids[select(t2i, t2i.diagonal(), pair)], candidate_ids)
