"""InfoNCE with false-negative elimination or attraction, and its SimCLR / MoCo layouts.

lightly's ``NTXentLoss`` takes no mask, so it cannot drop or attract detected false
negatives. :func:`masked_info_nce` is the one loss of every method and detection mode;
with no false negatives it equals lightly's ``NTXentLoss`` (tested), so the baseline and
the detectors share one code path.
"""

from __future__ import annotations

import torch

MODES = ("elimination", "attraction")


def masked_info_nce(
    logits: torch.Tensor,
    positive_mask: torch.Tensor,
    false_negative_mask: torch.Tensor | None = None,
    exclude_mask: torch.Tensor | None = None,
    mode: str = "elimination",
) -> torch.Tensor:
    """Mean InfoNCE over anchors, with detected false negatives removed or attracted.

    Every mask may carry leading dimensions (e.g. ``[L, B, M]``, one slice per granularity
    level) that broadcast against ``[B, M]``; the loss is then the mean over all of them, so
    the levels are averaged in one batched log-sum-exp.

    Args:
        logits: ``[B, M]`` similarities / temperature between anchors and candidates.
        positive_mask: ``[B, M]`` bool, the anchor's true positive(s) (at least one a row).
        false_negative_mask: ``[B, M]`` (or ``[L, B, M]``) bool, detected false negatives, or None.
        exclude_mask: ``[B, M]`` bool, candidates that are never part of the loss
            (the anchor itself in SimCLR's 2N x 2N layout), or None.
        mode: ``elimination`` drops false negatives from the denominator (IFND eq.);
            ``attraction`` counts them as further positives and averages the
            log-likelihood over all positives of a row (SupCon's L_out).

    Returns:
        Scalar loss.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    in_loss = torch.ones_like(positive_mask) if exclude_mask is None else ~exclude_mask
    positives = positive_mask
    if false_negative_mask is not None:
        false_negative_mask = false_negative_mask & ~positive_mask
        if mode == "elimination":
            in_loss = in_loss & ~false_negative_mask
        else:
            positives = positive_mask | false_negative_mask
    positives = positives & in_loss
    masked = logits.masked_fill(~in_loss, float("-inf"))
    log_prob = masked - torch.logsumexp(masked, dim=-1, keepdim=True)  # [(L,) B, M]
    per_row = -torch.where(positives, log_prob, 0.0).sum(-1) / positives.sum(-1).clamp(min=1)
    return per_row.mean()


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
