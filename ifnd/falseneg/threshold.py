"""A second detector family: a learned similarity threshold per anchor, no clustering round.

In the spirit of GloFND (ICML 2025): every training sample ``i`` keeps a threshold ``λ_i``; a
candidate ``j`` whose similarity to ``i`` exceeds ``λ_i`` is a detected false negative. The
threshold follows, by stochastic steps at every training step, the ``(1 - q)`` quantile of
``i``'s similarities to its candidates, so that about a share ``q`` of them is flagged:

    λ_i <- λ_i + lr * (share of i's candidates with s_ij > λ_i  -  q)

(the subgradient step of the quantile loss). An anchor's threshold starts, the first time it
is in a batch, at the ``(1 - q)`` quantile of its similarities then (a warm start: an anchor is
updated only once an epoch, so steps from an arbitrary start would take many epochs); it is
learned from the first step, and detections are used once ``detection.warmup_epochs`` have passed.
"""

from __future__ import annotations

import torch

from ifnd.runtime import distributed as dist


def threshold_step(thresholds: torch.Tensor, sims: torch.Tensor, valid: torch.Tensor, quantile: float,
                   lr: float) -> torch.Tensor:
    """One quantile-tracking step.

    Args:
        thresholds: ``[B]`` the anchors' current thresholds.
        sims: ``[B, M]`` cosine similarities of the anchors to the candidates.
        valid: ``[B, M]`` bool, the candidates that count (other samples, filled slots).
        quantile: ``q``, the share of candidates to flag.
        lr: step size.

    Returns:
        ``[B]`` the new thresholds, clamped to ``[-1, 1]``.
    """
    above = ((sims > thresholds.unsqueeze(1)) & valid).sum(1).to(thresholds.dtype)
    share = above / valid.sum(1).clamp(min=1).to(thresholds.dtype)
    return (thresholds + lr * (share - quantile)).clamp(-1.0, 1.0)


def row_quantile(sims: torch.Tensor, valid: torch.Tensor, quantile: float) -> torch.Tensor:
    """Per row, the value above which about a share ``quantile`` of the valid entries lies.

    Args:
        sims: ``[B, M]``; valid: ``[B, M]`` bool (at least one a row for a meaningful value).

    Returns:
        ``[B]``: the ``floor(quantile * count)``-th largest valid entry (0-based) of each row.
    """
    ranked = sims.masked_fill(~valid, float("-inf")).sort(dim=1, descending=True).values
    count = valid.sum(1)
    k = (quantile * count).long().clamp(max=(count - 1).clamp(min=0))
    return ranked.gather(1, k.unsqueeze(1)).squeeze(1)


class AnchorThresholds:
    """The thresholds ``λ [N]`` of every training sample (NaN until first seen), updated online, kept in checkpoints.

    Args:
        num_samples: ``N``.
        quantile, lr: see :func:`threshold_step`.
    """

    def __init__(self, num_samples: int, quantile: float, lr: float):
        if not 0 < quantile < 1 or lr <= 0:
            raise ValueError(f"threshold quantile must be in (0, 1) and lr > 0, got {quantile}, {lr}")
        self.values = torch.full((num_samples,), float("nan"))
        self.quantile, self.lr = quantile, lr

    @torch.no_grad()
    def masks(self, anchor_ids: torch.Tensor, candidate_ids: torch.Tensor, sims: torch.Tensor,
              detect: bool) -> torch.Tensor | None:
        """Detected pairs ``[1, B, M]`` (None when ``detect`` is False), then one threshold step.

        Args:
            anchor_ids: ``[B]``; candidate_ids: ``[M]`` (negative: no sample); sims: ``[B, M]``.
            detect: whether the detections are used yet (after the warm-up).

        Under DDP every rank's updated thresholds are gathered, so all ranks keep the same table.
        """
        device = sims.device
        anchors, candidates = anchor_ids.to(device), candidate_ids.to(device)
        valid = (candidates >= 0).unsqueeze(0) & (anchors.unsqueeze(1) != candidates.unsqueeze(0))
        current = self.values.to(device)[anchors]
        unset = current.isnan()
        if bool(unset.any()):
            current[unset] = row_quantile(sims.detach()[unset].float(), valid[unset], self.quantile)
        detected = (sims.detach() > current.unsqueeze(1)) & valid if detect else None
        new = threshold_step(current, sims.detach().float(), valid, self.quantile, self.lr)
        ids, new = dist.gather(anchors).cpu(), dist.gather(new).cpu()
        # an anchor seen twice in a step (SimCLR's two views) gets the mean of its two updates
        self.values.scatter_reduce_(0, ids, new, reduce="mean", include_self=False)
        return None if detected is None else detected.unsqueeze(0)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"values": self.values}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state["values"].shape != self.values.shape:
            raise ValueError(f"thresholds have shape {tuple(state['values'].shape)}, expected {tuple(self.values.shape)}")
        self.values.copy_(state["values"])
