"""Label-free choice of the k-means granularity: the k whose clustering has the best cosine silhouette.

A user who does not know the class count cannot set ``detection.num_clusters`` well: the pilot's
best detector clustered at about the class count (k = 10 and 20 for 10 classes), while the global
default k = 30 / 60 over-clusters such data, and recall, which the gain follows, drops. With
``detection.choose_k: silhouette`` every round clusters a random sample of the round's features
(``detection.k_sample`` rows) at each candidate k (``detection.k_candidates``) and keeps the k of the
highest mean silhouette (cosine distance); the round's two levels are then ``k`` and ``2 k``.

Why no coarser level: on scikit-learn's digits (10 classes, the small CNN's head after 30 epochs of
SimCLR, the setting this rule was fixed on, before any registered study ran it;
``tools/choose_k_curve.py``) the silhouette peaked at k = 10 or 20, once or twice the class count,
with pair precision 0.76-0.87 there; half of k = 10 falls to precision 0.31, near the harmful side.

The silhouette is our own: scikit-learn's ``silhouette_score`` builds the ``[m, m]`` distance matrix
(O(m^2 D)); with cosine distance on unit vectors the mean distance from a point to a cluster is one
minus its dot product with the cluster's mean vector, so the exact score costs O(m K D), on the
features' device.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ifnd.runtime import distributed as dist

MIN_POINTS_PER_CLUSTER = 10
"""A candidate k is tried only where the sample holds at least this many points per cluster."""

PATIENCE = 2
"""Candidates in a row scoring below the best that end the search for k."""

Clusterer = Callable[[torch.Tensor, Sequence[int]], list[torch.Tensor]]
"""``(sample [m, D], ks) -> [m]`` long assignments per k: the round's k-means, on the sample alone."""


def cosine_silhouette(x: torch.Tensor, assignments: torch.Tensor) -> float:
    """Mean silhouette of a clustering under cosine distance, exactly (as scikit-learn's ``metric="cosine"``).

    For point i of cluster A: a(i) is its mean distance to the other members of A, b(i) the smallest
    mean distance to the members of another cluster, s(i) = (b - a) / max(a, b), and 0 for a point
    alone in its cluster.

    Args:
        x: ``[m, D]`` float features (normalised here).
        assignments: ``[m]`` long cluster ids in ``[0, K)``; at least two clusters must be used.

    Returns:
        The mean of s over the m points, in [-1, 1].
    """
    x = F.normalize(x.double(), dim=1)
    clusters, assignments = torch.unique(assignments, return_inverse=True)
    k = len(clusters)
    if k < 2:
        raise ValueError("the silhouette needs at least two clusters")
    counts = torch.bincount(assignments, minlength=k).double()
    sums = torch.zeros(k, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, assignments, x)
    dots = x @ sums.T  # [m, K]: sum of the cosine similarities of each point to each cluster's members
    own = dots.gather(1, assignments.view(-1, 1)).squeeze(1)
    own_count = counts[assignments]
    a = 1.0 - (own - 1.0) / (own_count - 1.0).clamp_min(1.0)  # the point itself (similarity 1) left out
    other = 1.0 - dots / counts.view(1, -1)
    other.scatter_(1, assignments.view(-1, 1), float("inf"))
    b = other.min(dim=1).values
    s = (b - a) / torch.maximum(a, b).clamp_min(1e-12)
    s = torch.where(own_count > 1, s, torch.zeros_like(s))
    return float(s.mean())


def usable_candidates(candidates: Sequence[int], sample_size: int) -> list[int]:
    """The candidates k with at least :data:`MIN_POINTS_PER_CLUSTER` sample points per cluster, in order."""
    return [k for k in candidates if k * MIN_POINTS_PER_CLUSTER <= sample_size]


def levels_for(k: int) -> tuple[int, int]:
    """The round's two levels for a chosen ``k``: ``k`` itself, then the finer ``2 k``."""
    return k, 2 * k


def choose_k(sample: torch.Tensor, candidates: Sequence[int], cluster: Clusterer,
             patience: int = PATIENCE) -> tuple[int, dict[int, float]]:
    """The candidate whose clustering of ``sample [m, D]`` has the highest cosine silhouette.

    The candidates are tried from the smallest; the search stops once ``patience`` candidates in a
    row score below the best so far (the silhouette over k rises to one peak and falls on the
    features measured, and the largest ks cost the most).

    Args:
        sample: ``[m, D]`` float features.
        candidates: the ks to try (those with fewer than :data:`MIN_POINTS_PER_CLUSTER` points per cluster
            are skipped).
        cluster: see :data:`Clusterer`.
        patience: candidates below the best, in a row, that end the search.

    Returns:
        ``(k, {k: silhouette})`` over the candidates tried; ties go to the smaller k.
    """
    ks = usable_candidates(sorted(candidates), len(sample))
    if not ks:
        raise ValueError(f"no candidate k in {list(candidates)} has {MIN_POINTS_PER_CLUSTER} of the {len(sample)} "
                         "sample points per cluster")
    scores: dict[int, float] = {}
    best, worse = ks[0], 0
    for k in ks:
        scores[k] = cosine_silhouette(sample, cluster(sample, [k])[0])
        if scores[k] > scores[best]:
            best, worse = k, 0
        elif k != best:
            worse += 1
            if worse == patience:
                break
    return best, scores


def round_sample(features: torch.Tensor, size: int, seed: int, sharded: bool) -> torch.Tensor:
    """A random sample of about ``size`` rows of the round's features, the same on every rank.

    Args:
        features: ``[n, D]`` rows (this rank's shard when ``sharded``).
        size: rows wanted in all (every row when there are fewer).
        seed: the round's seed (each rank draws with ``seed + rank``).
        sharded: the rows are split over the ranks: each draws an equal share, and the shares are gathered.

    Returns:
        ``[m, D]`` float rows on ``features``' device, m <= size.
    """
    world = dist.world_size() if sharded else 1
    per_rank = min(size // world, min(dist.all_objects(len(features))) if sharded else len(features))
    rows = sample_rows(len(features), per_rank, seed + (dist.rank() if sharded else 0)).to(features.device)
    sample = features[rows].float()
    return dist.gather(sample) if sharded else sample


def sample_rows(count: int, size: int, seed: int) -> torch.Tensor:
    """``[min(size, count)]`` long: distinct random rows of ``count``, drawn with ``seed`` (a round's draw)."""
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:size]


def choose_levels(features: torch.Tensor, candidates: Sequence[int], size: int, seed: int, sharded: bool,
                  cluster: Clusterer) -> tuple[tuple[int, int], dict[int, float]]:
    """A round's two levels (:func:`levels_for` of :func:`choose_k` on :func:`round_sample`), and the scores.

    With ``sharded`` rows every rank calls this; rank 0 chooses and every rank gets its choice.
    """
    sample = round_sample(features, size, seed, sharded)
    choice = choose_k(sample, candidates, cluster) if dist.is_main() or not sharded else None
    k, scores = dist.broadcast_object(choice) if sharded else choice
    return levels_for(k), scores
