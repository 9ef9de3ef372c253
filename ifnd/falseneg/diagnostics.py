"""Quality of false-negative detection against the true classes.

Used only for logging (precision and recall of the detected pairs, cluster quality);
the loss never sees the true classes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix

from ifnd.runtime import distributed as dist

ArrayLike = np.ndarray | torch.Tensor


@dataclass(frozen=True)
class PairCounts:
    """Counts of candidate pairs; add two to accumulate over batches.

    Attributes:
        detected: pairs flagged as false negatives.
        true_positive: flagged pairs whose true classes are equal.
        actual: pairs whose true classes are equal (the real false negatives).
    """

    detected: int
    true_positive: int
    actual: int

    def __add__(self, other: PairCounts) -> PairCounts:
        return PairCounts(
            self.detected + other.detected,
            self.true_positive + other.true_positive,
            self.actual + other.actual,
        )

    @property
    def precision(self) -> float:
        """Share of flagged pairs that are real false negatives; 0.0 when none is flagged."""
        return self.true_positive / self.detected if self.detected else 0.0

    @property
    def recall(self) -> float:
        """Share of real false negatives that are flagged; 0.0 when there are none."""
        return self.true_positive / self.actual if self.actual else 0.0


@dataclass(frozen=True)
class DetectionTally:
    """Detected candidate pairs by (anchor class, candidate class), for several views of the detection.

    A view is one granularity level, or the union of the levels (what the loss removes at any
    level). Add two tallies to accumulate over batches (and over ranks, summed).

    Attributes:
        detected: ``[V, C, C]`` long, detected pairs per view by (anchor class, candidate class).
        actual: ``[C]`` long, real false negatives (same-class pairs) per anchor class.
    """

    detected: torch.Tensor
    actual: torch.Tensor

    def __add__(self, other: DetectionTally) -> DetectionTally:
        return DetectionTally(self.detected + other.detected, self.actual + other.actual)

    def precision(self, view: int = -1) -> float:
        """Share of a view's detected pairs that are real false negatives (0.0 when none is detected)."""
        detected = self.detected[view]
        return float(detected.trace() / detected.sum()) if int(detected.sum()) else 0.0

    def recall(self, view: int = -1) -> float:
        """Share of real false negatives that a view detects (0.0 when there are none)."""
        return float(self.detected[view].trace() / self.actual.sum()) if int(self.actual.sum()) else 0.0

    def per_class(self, view: int = -1) -> dict[str, list[float]]:
        """Per anchor class: ``precision``, ``recall`` and ``labelled`` (share of its detections in all pairs
        detected, i.e. which classes get labels); NaN where a class has no detection or no real pair."""
        detected = self.detected[view].double()
        hits = detected.diagonal()
        flagged = detected.sum(1)
        nan = torch.full_like(hits, float("nan"))
        total = max(float(flagged.sum()), 1.0)
        return {
            "precision": torch.where(flagged > 0, hits / flagged.clamp(min=1), nan).tolist(),
            "recall": torch.where(self.actual > 0, hits / self.actual.double().clamp(min=1), nan).tolist(),
            "labelled": (flagged / total).tolist(),
        }


class PairTally:
    """A :class:`DetectionTally` accumulated where the masks are (the training device), batch by batch.

    Each batch costs O(V x B x M) scatter-adds into a ``[V, C, C]`` table on the device (no
    host synchronisation, no copy); :meth:`reduced` sums it over ranks and copies it to the CPU
    once (per epoch).

    Args:
        views: V; num_classes: C; device: where the table lives.
    """

    def __init__(self, views: int, num_classes: int, device: torch.device | str = "cpu"):
        self.shape = (views, num_classes, num_classes)
        self.detected = torch.zeros(views * num_classes * num_classes, dtype=torch.long, device=device)
        self.actual = torch.zeros(num_classes, dtype=torch.long, device=device)

    def add(
        self,
        masks: torch.Tensor,
        anchor_ids: torch.Tensor,
        candidate_ids: torch.Tensor,
        anchor_classes: torch.Tensor,
        candidate_classes: torch.Tensor,
    ) -> None:
        """Count one batch.

        Args:
            masks: ``[V, B, M]`` bool, detected false negatives of each view.
            anchor_ids: ``[B]`` long dataset index of each anchor.
            candidate_ids: ``[M]`` long dataset index of each candidate, negative for a slot that
                holds no sample (empty, or a random key).
            anchor_classes: ``[B]`` long true class of each anchor.
            candidate_classes: ``[M]`` long true class of each candidate (any value in those slots).

        Pairs of a sample with itself and pairs with slots that hold no sample are not counted.
        """
        device, num_classes = self.detected.device, self.shape[1]
        candidates = candidate_ids.to(device)
        counted = (candidates >= 0).unsqueeze(0) & (anchor_ids.to(device).unsqueeze(1) != candidates.unsqueeze(0))
        a = anchor_classes.to(device).unsqueeze(1).expand_as(counted)
        c = candidate_classes.to(device).unsqueeze(0).expand_as(counted).clamp(0, num_classes - 1)
        cells = (a * num_classes + c).unsqueeze(0) + \
            torch.arange(len(masks), device=device).view(-1, 1, 1) * num_classes * num_classes  # [V, B, M]
        hits = masks.to(device) & counted
        self.detected.index_put_((cells.reshape(-1),), hits.reshape(-1).long(), accumulate=True)
        self.actual.index_put_((a.reshape(-1),), (counted & (a == c)).reshape(-1).long(), accumulate=True)

    def local(self) -> DetectionTally:
        """This rank's tally so far (on the device)."""
        return DetectionTally(self.detected.view(self.shape), self.actual)

    def reduced(self) -> DetectionTally:
        """The tally summed over ranks, on the CPU (a collective: every rank calls it)."""
        return DetectionTally(dist.sum_tensor(self.detected).view(self.shape).cpu(), dist.sum_tensor(self.actual).cpu())


def tally_pairs(
    masks: torch.Tensor,
    anchor_ids: torch.Tensor,
    candidate_ids: torch.Tensor,
    anchor_classes: torch.Tensor,
    candidate_classes: torch.Tensor,
    num_classes: int,
) -> DetectionTally:
    """The :class:`DetectionTally` of one batch (arguments as in :meth:`PairTally.add`, ``num_classes`` C), on the CPU."""
    tally = PairTally(len(masks), num_classes, masks.device)
    tally.add(masks, anchor_ids, candidate_ids, anchor_classes, candidate_classes)
    return DetectionTally(tally.local().detected.cpu(), tally.actual.cpu())


def _as_numpy(values: ArrayLike) -> np.ndarray:
    return values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)


def _ordered_pairs_within_groups(keys: np.ndarray) -> int:
    """Number of ordered pairs (i, j), i != j, with ``keys[i] == keys[j]``.

    Args:
        keys: ``[N]`` integer group key of each sample.
    """
    _, sizes = np.unique(keys, return_counts=True)
    sizes = sizes.astype(np.int64)
    return int(np.sum(sizes * (sizes - 1)))


def table_pair_counts(pseudo_labels: ArrayLike, classes: ArrayLike) -> PairCounts:
    """Counts over all ordered pairs (i, j), i != j, of a data set.

    Computed from the sizes of the (pseudo-label, class) groups, so memory and time are
    O(N log N), never N x N.

    Args:
        pseudo_labels: ``[N]`` integer accepted pseudo-label, -1 when not accepted.
        classes: ``[N]`` integer true class (>= 0).

    Returns:
        detected: pairs sharing an accepted pseudo-label; true_positive: those that also
        share a class; actual: pairs sharing a class, over all samples.
    """
    labels = _as_numpy(pseudo_labels).astype(np.int64)
    _, class_index = np.unique(_as_numpy(classes), return_inverse=True)
    class_index = class_index.reshape(-1).astype(np.int64)
    if labels.shape != class_index.shape:
        raise ValueError(f"pseudo_labels and classes must both be [N], got {labels.shape}")
    accepted = labels >= 0
    joint = labels[accepted] * (class_index.max(initial=0) + 1) + class_index[accepted]
    return PairCounts(
        detected=_ordered_pairs_within_groups(labels[accepted]),
        true_positive=_ordered_pairs_within_groups(joint),
        actual=_ordered_pairs_within_groups(class_index),
    )


def nmi(assignments: ArrayLike, classes: ArrayLike) -> float:
    """Normalised mutual information between a clustering and the true classes.

    Args:
        assignments: ``[N]`` integer cluster of each sample.
        classes: ``[N]`` integer true class of each sample.

    Returns:
        scikit-learn's ``normalized_mutual_info_score`` (arithmetic normalisation), in [0, 1].
    """
    return float(normalized_mutual_info_score(_as_numpy(classes), _as_numpy(assignments)))


def purity(assignments: ArrayLike, classes: ArrayLike) -> float:
    """Share of samples that belong to the majority class of their cluster.

    Args:
        assignments: ``[N]`` integer cluster of each sample.
        classes: ``[N]`` integer true class of each sample.

    Returns:
        Sum over clusters of the largest class count, divided by N.
    """
    table = contingency_matrix(_as_numpy(classes), _as_numpy(assignments), sparse=True)
    return float(table.max(axis=0).sum() / table.sum())


def similarity_ranking_curve(features: torch.Tensor, classes: torch.Tensor,
                             per_anchor: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Pair precision and recall of flagging the most similar pairs, at every cut of the ranking.

    No detector that flags the pairs above one similarity threshold (or each anchor's m nearest,
    with ``per_anchor``) is more precise at a recall than this curve. ``N x N`` memory: for
    analysis tools, not training.

    Args:
        features: ``[N, D]`` L2-normalised features (cosine similarity is their dot product).
        classes: ``[N]`` integer true classes.
        per_anchor: False ranks all ordered pairs (i, j), i != j, by similarity, and cut t flags the
            t most similar; True lets every anchor flag its m most similar others, and cut m flags
            N x m pairs.

    Returns:
        ``(precision, recall)``, each ``[C]`` float64 over the cuts (``C = N (N - 1)`` pairs, or
        ``C = N - 1`` neighbours per anchor).
    """
    n = features.shape[0]
    sims = features.float() @ features.float().T
    sims.fill_diagonal_(-math.inf)  # an anchor is not its own negative
    same = classes.view(-1, 1) == classes.view(1, -1)
    same.fill_diagonal_(False)
    actual = int(same.sum())
    if per_anchor:
        order = sims.argsort(dim=1, descending=True)[:, : n - 1]
        hits = same.gather(1, order).sum(dim=0).double().cumsum(0)
        flagged = torch.arange(1, n, dtype=torch.float64) * n
    else:
        keep = ~torch.eye(n, dtype=torch.bool)
        order = sims[keep].argsort(descending=True)
        hits = same[keep][order].double().cumsum(0)
        flagged = torch.arange(1, hits.numel() + 1, dtype=torch.float64)
    return hits / flagged, hits / max(actual, 1)


def precision_at_recall(precision: torch.Tensor, recall: torch.Tensor, target: float) -> float:
    """The highest precision among the cuts whose recall reaches ``target`` (NaN when none does).

    Args:
        precision, recall: ``[C]`` over the cuts of a ranking, as :func:`similarity_ranking_curve` returns.
    """
    reach = recall >= target - 1e-12
    return float(precision[reach].max()) if bool(reach.any()) else math.nan
