"""A second detector family: a learned similarity threshold per anchor, no clustering round.

GloFND (Balmaseda et al., ICML 2025; code: vibalcam/GloFND): every training sample ``i`` keeps
a threshold ``λ_i``; a candidate ``j`` (another sample: not the anchor's own views) whose cosine
similarity to ``i`` exceeds ``λ_i`` is a detected false negative. ``λ_i`` follows the
``(1 - α)`` quantile of ``i``'s similarities to its candidates, so that about a share ``α``
(``quantile`` here) of them is flagged. Each step an anchor is in the batch, its threshold takes
one step on the quantile loss, whose gradient is

    g_i = α - (share of i's candidates with s_ij > λ_i),

the share taken over all the anchor's rows of the step (SimCLR: its two views) at once; then the
anchor's pairs are masked with the updated ``λ_i``, as in GloFND (update, then mask). The step is

* ``sgd``: ``λ_i <- λ_i - lr * g_i``;
* ``adam`` (GloFND's code): per-anchor Adam moments, ``β = (0.9, 0.98)``, ``eps = 1e-8``, bias
  correction with the training epoch (``1 - β^(epoch + 1)``, as theirs: an anchor is updated once
  an epoch);

clamped to ``[-1, 1]``. The start value (``init``) is ``quantile`` (the ``(1 - α)`` quantile of
the anchor's similarities the first time it is learned, linear interpolation as
``torch.quantile``, with no step: GloFND's ``init_quantile``) or ``one`` (``λ = 1``, nothing
flagged until the thresholds have walked down: GloFND's default). Whether a step learns and
whether it masks are the caller's (GloFND's ``start_update`` and ``lda_start`` epochs).
"""

from __future__ import annotations

import torch

from ifnd.runtime import distributed as dist

OPTIMIZERS = ("sgd", "adam")
INITS = ("quantile", "one")
ADAM_BETAS, ADAM_EPS = (0.9, 0.98), 1e-8


def share_above(sims: torch.Tensor, thresholds: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``[B]`` the share of each row's valid candidates whose similarity exceeds the row's threshold.

    Args:
        sims: ``[B, M]`` cosine similarities; thresholds: ``[B]``; valid: ``[B, M]`` bool.
    """
    above = ((sims > thresholds.unsqueeze(1)) & valid).sum(1).to(sims.dtype)
    return above / valid.sum(1).clamp(min=1).to(sims.dtype)


def threshold_step(thresholds: torch.Tensor, share: torch.Tensor, quantile: float, lr: float) -> torch.Tensor:
    """One SGD step on the quantile loss: ``λ - lr * (α - share)``, clamped to ``[-1, 1]``.

    Args:
        thresholds: ``[U]`` the anchors' thresholds; share: ``[U]`` their :func:`share_above`;
        quantile: ``α``, the share of candidates to flag; lr: step size.
    """
    return (thresholds - lr * (quantile - share)).clamp(-1.0, 1.0)


def adam_threshold_step(thresholds: torch.Tensor, share: torch.Tensor, quantile: float, lr: float,
                        first: torch.Tensor, second: torch.Tensor, epoch: int
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """GloFND's Adam step on the quantile loss, with per-anchor moments.

    Args:
        thresholds, share: ``[U]``; quantile, lr: as :func:`threshold_step`;
        first, second: ``[U]`` the anchors' Adam moments; epoch: the training epoch (0-based),
            whose ``epoch + 1`` is the bias correction's step count (GloFND's choice).

    Returns:
        ``(thresholds, first, second)`` updated, thresholds clamped to ``[-1, 1]``.
    """
    (beta1, beta2), grad = ADAM_BETAS, quantile - share
    first = beta1 * first + (1 - beta1) * grad
    second = beta2 * second + (1 - beta2) * grad ** 2
    step = (first / (1 - beta1 ** (epoch + 1))) / ((second / (1 - beta2 ** (epoch + 1))).sqrt() + ADAM_EPS)
    return (thresholds - lr * step).clamp(-1.0, 1.0), first, second


def row_quantile(sims: torch.Tensor, valid: torch.Tensor, quantile: float) -> torch.Tensor:
    """Per row, the ``(1 - quantile)`` quantile of the valid entries, interpolated as ``torch.quantile``.

    Args:
        sims: ``[B, M]``; valid: ``[B, M]`` bool.

    Returns:
        ``[B]`` (NaN for a row with no valid entry).
    """
    ranked = sims.masked_fill(~valid, float("inf")).sort(dim=1).values  # valid entries first, ascending
    count = valid.sum(1)
    position = (1.0 - quantile) * (count - 1).clamp(min=0).to(sims.dtype)
    low = position.floor().long()
    high = (low + 1).clamp(max=(count - 1).clamp(min=0))
    below, above = ranked.gather(1, low.unsqueeze(1)).squeeze(1), ranked.gather(1, high.unsqueeze(1)).squeeze(1)
    value = below + (position - low.to(sims.dtype)) * (above - below).nan_to_num(0.0)
    return value.masked_fill(count == 0, float("nan"))


def mean_by_id(ids: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(unique ids [U], mean of values [U])``: the rows of one anchor (its views) averaged."""
    unique, inverse = ids.unique(return_inverse=True)
    means = values.new_zeros(len(unique)).scatter_reduce_(0, inverse, values, reduce="mean", include_self=False)
    return unique, means


class AnchorThresholds:
    """The thresholds ``λ [N]`` of every training sample, updated online, kept in checkpoints.

    Args:
        num_samples: ``N``.
        quantile: ``α``, the share of each anchor's candidates to flag (GloFND: 0.01).
        lr: step size (GloFND: 0.05 with adam).
        optimizer: ``sgd`` or ``adam`` (GloFND's).
        init: ``quantile`` (unset, NaN, until first learned) or ``one`` (GloFND's default).
    """

    def __init__(self, num_samples: int, quantile: float, lr: float, optimizer: str = "sgd", init: str = "quantile"):
        if not 0 < quantile < 1 or lr <= 0:
            raise ValueError(f"threshold quantile must be in (0, 1) and lr > 0, got {quantile}, {lr}")
        if optimizer not in OPTIMIZERS or init not in INITS:
            raise ValueError(f"threshold optimizer must be one of {OPTIMIZERS} and init one of {INITS}, got {optimizer!r}, {init!r}")
        self.values = torch.full((num_samples,), float("nan") if init == "quantile" else 1.0)
        self.moments = torch.zeros(2, num_samples) if optimizer == "adam" else None  # Adam's first, second
        self.quantile, self.lr = quantile, lr

    @torch.no_grad()
    def masks(self, anchor_ids: torch.Tensor, candidate_ids: torch.Tensor, sims: torch.Tensor,
              detect: bool, learn: bool = True, epoch: int = 0) -> torch.Tensor | None:
        """One threshold step (when ``learn``), then the detected pairs ``[1, B, M]`` (None unless ``detect``).

        Args:
            anchor_ids: ``[B]`` (an id may repeat: an anchor's views); candidate_ids: ``[M]``
                (negative: no sample); sims: ``[B, M]`` cosine similarities.
            detect: whether the detections are used yet; learn: whether the thresholds learn yet;
            epoch: the training epoch (Adam's bias correction).

        Candidates of the anchor's own sample and empty slots are never counted nor flagged.
        Under DDP the rows of every rank are gathered first, so all ranks keep the same table.
        """
        device = sims.device
        anchors, candidates = anchor_ids.to(device), candidate_ids.to(device)
        valid = (candidates >= 0).unsqueeze(0) & (anchors.unsqueeze(1) != candidates.unsqueeze(0))
        sims = sims.detach().float()
        if learn:
            current = self.values.to(device)[anchors]
            starts = torch.full_like(current, float("nan"))  # the start of an anchor still unset
            unset = current.isnan()
            if bool(unset.any()):
                starts[unset] = row_quantile(sims[unset], valid[unset], self.quantile)
            self._learn(dist.gather(anchors).cpu(), dist.gather(share_above(sims, current, valid)).cpu(),
                        dist.gather(starts).cpu(), epoch)
        if not detect:
            return None
        current = self.values.to(device)[anchors]  # NaN (not yet learned) flags nothing
        return ((sims > current.unsqueeze(1)) & valid).unsqueeze(0)

    def _learn(self, ids: torch.Tensor, share: torch.Tensor, starts: torch.Tensor, epoch: int) -> None:
        """One step for every anchor in ``ids [R]`` from its rows' mean share; unset anchors start at their rows' mean quantile."""
        unique, share = mean_by_id(ids, share)
        starts = mean_by_id(ids, starts)[1]
        current = self.values[unique]
        unset = current.isnan()
        if self.moments is None:
            new = threshold_step(current, share, self.quantile, self.lr)
        else:
            new, first, second = adam_threshold_step(current, share, self.quantile, self.lr,
                                                     self.moments[0, unique], self.moments[1, unique], epoch)
            self.moments[:, unique[~unset]] = torch.stack([first, second])[:, ~unset]
        self.values[unique] = torch.where(unset, starts, new)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"values": self.values} if self.moments is None else {"values": self.values, "moments": self.moments}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        mine = self.state_dict()
        if set(state) != set(mine):
            raise ValueError(f"threshold state has {sorted(state)}, expected {sorted(mine)} "
                             "(detection.threshold_optimizer differs from the checkpoint's run)")
        for key, tensor in mine.items():
            if state[key].shape != tensor.shape:
                raise ValueError(f"threshold {key} have shape {tuple(state[key].shape)}, expected {tuple(tensor.shape)}")
            tensor.copy_(state[key])
