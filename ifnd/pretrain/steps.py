"""One training step's loss for SimCLR and MoCo v2, with false-negative masks.

Each step returns a :class:`StepOutput`: the loss, the embeddings to store for the
``bank`` features, and the (anchor ids, candidate ids, per-level masks) that the
diagnostics compare with the true classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ifnd.falseneg.bayes import FNESampler
from ifnd.falseneg.detectors import Detector, SupportViews
from ifnd.losses import moco_layout, simclr_layout
from ifnd.models.contrastive import MoCoModel
from ifnd.models.ring_buffer import IdRingBuffer
from ifnd.objectives import Objective
from ifnd.runtime import distributed as dist


@dataclass
class StepOutput:
    loss: torch.Tensor            # scalar
    embeddings: torch.Tensor      # [B, D] detached target embeddings of view 1 (for the bank)
    anchor_ids: torch.Tensor      # [A] dataset ids of the loss anchors
    candidate_ids: torch.Tensor   # [M] dataset ids of the candidates
    fn_masks: torch.Tensor | None  # [L, A, M] bool, detected per level (None: no detection yet)


def simclr_step(forward: Callable, x1, x2, ids, detector: Detector, cfg: Any, objective: Objective,
                model: nn.Module | None = None, support: torch.Tensor | None = None) -> StepOutput:
    """``objective`` (NT-Xent) over the 2N (x world size) views; false negatives masked per level.

    ``forward`` is the model (or its DDP wrapper); both views go through it as one
    batch ``[2B, 3, S, S]`` (one forward per step, as DDP requires). A detector's support
    views ``[B, V, 3, S, S]`` go through ``model`` (unwrapped) without gradient, while it is active.
    """
    z1, z2 = forward(torch.cat([x1, x2])).chunk(2)
    all_z1, all_z2, all_ids = dist.gather_with_grad(z1), dist.gather_with_grad(z2), dist.gather(ids)
    logits, positive, exclude, ids2 = simclr_layout(all_z1, all_z2, all_ids, cfg.simclr.temperature)
    rows = dist.local_rows(2, z1.shape[0])  # this rank's anchors among the 2N x world rows
    logits, positive, exclude, anchor_ids = logits[rows], positive[rows], exclude[rows], ids2[rows]
    sims = logits.detach() * cfg.simclr.temperature if detector.needs_similarities else None
    views = None
    if detector.support_views and detector.active:
        views = support_embeddings(model, support, z1, z2, torch.cat([all_z1, all_z2]))
    masks = detector.detect(anchor_ids, ids2, sims, views)
    loss = objective(logits, detector.loss_masks(positive, masks, exclude))
    return StepOutput(loss, z1.detach(), anchor_ids, ids2, masks)


@torch.no_grad()
def image_views(encoder: Callable | None, support: torch.Tensor | None, z1: torch.Tensor,
                z2: torch.Tensor) -> torch.Tensor:
    """``[B, 2 + V, D]`` every view of each image: its training views' embeddings ``z1, z2 [B, D]`` (detached), then
    its support views ``support [B, V, 3, S, S]`` embedded by ``encoder`` (in its current mode)."""
    if encoder is None or support is None:
        raise ValueError("the detector needs support views: the step got no model or no support views "
                         "(the dataset was built without detector.support_views)")
    batch, count = support.shape[:2]
    extra = encoder(support.flatten(0, 1)).reshape(batch, count, -1)  # [B, V, D]
    return torch.cat([z1.detach()[:, None], z2.detach()[:, None], extra], 1)


def support_embeddings(model: nn.Module | None, support: torch.Tensor | None, z1: torch.Tensor, z2: torch.Tensor,
                       candidates: torch.Tensor) -> SupportViews:
    """The :class:`SupportViews` of SimCLR's anchors (this rank's 2B rows: view 1 then view 2 of each image).

    Each image's set is its training views ``z1, z2 [B, D]`` and ``support [B, V, 3, S, S]`` embedded by
    ``model``: ``[2B, 2 + V, D]`` (:func:`image_views`), as FNC's code scores with all of an image's views;
    against ``candidates [M, D]`` (detached here).
    """
    views = image_views(model, support, z1, z2)
    return SupportViews(torch.cat([views, views]), candidates.detach())


def momentum_support(model: MoCoModel, support: torch.Tensor | None, k1: torch.Tensor, k2: torch.Tensor,
                     queue_keys: torch.Tensor) -> SupportViews:
    """The :class:`SupportViews` of MoCo's anchors, as FNC's memory version: every view of each image by the momentum
    encoder (its keys ``k1, k2 [B, D]`` and its support views, :func:`image_views`) against MoCo's candidates, a zero
    row for column 0 (the own key: never flagged) then ``queue_keys [K, D]``."""
    views = image_views(model.target, support, k1, k2)
    return SupportViews(views, torch.cat([queue_keys.new_zeros(1, queue_keys.shape[1]), queue_keys]))


def moco_step(model: MoCoModel, forward: Callable, queue: IdRingBuffer, x1, x2, ids, detector: Detector, cfg: Any,
              objective: Objective, sampler: FNESampler | None = None, generator: torch.Generator | None = None,
              support: torch.Tensor | None = None) -> StepOutput:
    """Symmetric MoCo v2 ``objective`` against the id-keeping queue; the view-1 keys of all ranks are then enqueued.

    ``forward`` is ``model`` or its DDP wrapper (queries of both views in one batch);
    the momentum encoder is used through ``model``. With an FNE ``sampler`` past its
    warm-up, queue negatives are re-weighted or sampled (:func:`fne_log_weights`);
    its statistics are fed with the in-batch query-key similarities every step. A detector's
    support views ``[B, V, 3, S, S]`` go through the momentum encoder while it is active (:func:`momentum_support`).
    """
    model.momentum_update(cfg.moco.momentum)
    q1, q2 = forward(torch.cat([x1, x2])).chunk(2)
    k1, k2 = model.target(x1), model.target(x2)
    queue_keys, queue_ids = (t.clone() for t in queue.contents())  # the enqueue below overwrites in place
    # candidate 0 is the own key (id -1: the positive, never a false negative), then the queue
    candidate_ids = torch.cat([ids.new_full((1,), -1), queue_ids])
    sims = F.pad(q1.detach() @ queue_keys.T, (1, 0)) if detector.needs_similarities else None  # [B, 1+K]
    views = None
    if detector.support_views and detector.active:
        views = momentum_support(model, support, k1, k2, queue_keys)
    masks = detector.detect(ids, candidate_ids, sims, views)
    if sampler is not None:  # statistics of the global batch: the same on every rank
        sampler.update_stats(dist.gather(q1.detach()) @ dist.gather(k2).T)
    use_fne = sampler is not None and not sampler.in_warmup and len(queue_ids) > 0
    pairs = ((q1, k2), (q2, k1))
    layouts = [moco_layout(q, k, queue_keys, cfg.moco.temperature) for q, k in pairs]
    # both directions have the same anchors and candidates: one set of loss masks
    shared = detector.loss_masks(layouts[0][1], masks, None)
    losses = []
    for (q, k), (logits, _) in zip(pairs, layouts):
        if use_fne:
            logits = logits + fne_log_weights(sampler, q.detach(), k, queue_keys, queue_ids, ids,
                                              cfg.negatives.num_samples, generator)
        losses.append(objective(logits, shared))
    queue.enqueue(dist.gather(k1), dist.gather(ids))
    return StepOutput(torch.stack(losses).mean(), k1, ids, candidate_ids, masks)


@torch.no_grad()
def fne_log_weights(sampler: FNESampler, q: torch.Tensor, k: torch.Tensor, queue_keys: torch.Tensor,
                    queue_ids: torch.Tensor, ids: torch.Tensor, num_samples: int,
                    generator: torch.Generator | None) -> torch.Tensor:
    """Log-weights ``[B, 1+K]`` to add to MoCo's logits (column 0, the positive, gets 0).

    ``num_samples == 0``: every queue negative is weighted by the sampler's true-negative
    weight, normalised to mean 1 over the candidates it keeps, so that
    ``sum_j w_j exp(s_j / T)`` replaces the plain denominator; ``num_samples > 0``: only
    the drawn negatives stay, each with its draw count. A zero weight removes a
    candidate; a row with no weight left keeps plain InfoNCE.
    """
    sims = q @ queue_keys.T                                # [B, K]
    positive = queue_ids[None, :] == ids[:, None]          # the anchor's own older keys
    pos_sims = (q * k).sum(1)
    if num_samples > 0:
        drawn = sampler(sims, pos_sims, positive, num_samples, generator).indices
        weights = torch.zeros_like(sims).scatter_add_(1, drawn, torch.ones_like(drawn, dtype=sims.dtype))
    else:
        weights, _ = sampler.weights(sims, pos_sims, positive)
        kept = (weights > 0).sum(1, keepdim=True)
        weights = weights * kept / weights.sum(1, keepdim=True).clamp(min=1e-12)
    weights = torch.where(weights.sum(1, keepdim=True) > 0, weights, torch.ones_like(weights))
    return torch.cat([torch.zeros_like(pos_sims)[:, None], weights.log()], dim=1)
