"""Confidence of pseudo-labels and the growing share of them that is accepted.

Method notes, steps 3-4: each sample's cluster assignment gets a confidence; at each
clustering round only the most confident share is accepted, and that share grows over
training. Similarities are computed in row chunks, so N = 1.28M samples against K = 100k
centroids never needs an N x K matrix.
"""

from __future__ import annotations

from typing import Callable, Iterator

import torch
import torch.nn.functional as F

SCHEDULES = ("linear", "step", "constant")
"""Names accepted by :func:`accepted_share`."""

DEFAULT_CHUNK_ELEMENTS = 1 << 26
"""Largest similarity block computed at once (64M floats = 256 MiB in float32)."""


def _cosine_chunks(
    features: torch.Tensor, centroids: torch.Tensor, chunk_elements: int
) -> Iterator[tuple[slice, torch.Tensor]]:
    """Cosine similarities between samples and centroids, a block of rows at a time.

    Args:
        features: ``[N, D]`` float, any norm.
        centroids: ``[K, D]`` float, any norm.
        chunk_elements: most entries per block; each block has ``max(1, chunk_elements // K)``
            rows.

    Yields:
        The slice of rows and their ``[rows, K]`` float32 similarities, on the device of
        ``features``.
    """
    if features.dim() != 2 or centroids.dim() != 2 or features.shape[1] != centroids.shape[1]:
        raise ValueError(
            f"need features [N, D] and centroids [K, D] with the same D, got "
            f"{tuple(features.shape)} and {tuple(centroids.shape)}"
        )
    unit_centroids = F.normalize(centroids.to(features.device, torch.float32), dim=1)
    step = max(1, chunk_elements // len(centroids))
    for start in range(0, len(features), step):
        rows = slice(start, start + step)
        yield rows, F.normalize(features[rows].float(), dim=1) @ unit_centroids.T


def _score_assigned(
    features: torch.Tensor,
    centroids: torch.Tensor,
    assignments: torch.Tensor,
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    chunk_elements: int,
) -> torch.Tensor:
    """``score(sims [rows, K], assigned [rows, 1]) -> [rows]`` over row blocks: ``[N]`` float32 on the features' device."""
    labels = assignments.to(features.device, torch.long).unsqueeze(1)
    confidence = torch.empty(len(features), dtype=torch.float32, device=features.device)
    for rows, sims in _cosine_chunks(features, centroids, chunk_elements):
        confidence[rows] = score(sims, labels[rows])
    return confidence


def softmax_confidence(
    features: torch.Tensor,
    centroids: torch.Tensor,
    assignments: torch.Tensor,
    temperature: float,
    *,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
) -> torch.Tensor:
    """Softmax probability of each sample's assigned centroid.

    Args:
        features: ``[N, D]`` float embeddings (L2-normalised here).
        centroids: ``[K, D]`` float centroids (L2-normalised here).
        assignments: ``[N]`` long, assigned centroid of each sample, in ``[0, K)``.
        temperature: softmax temperature over cosine similarities, > 0.
        chunk_elements: memory bound, see :data:`DEFAULT_CHUNK_ELEMENTS`.

    Returns:
        ``[N]`` float32 on the device of ``features``:
        ``softmax(cos(features, centroids) / temperature)[n, assignments[n]]``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if assignments.shape != features.shape[:1]:
        raise ValueError(
            f"assignments must be [N] with N={len(features)}, got {tuple(assignments.shape)}"
        )
    return _score_assigned(features, centroids, assignments,
                           lambda sims, own: torch.log_softmax(sims / temperature, dim=1).gather(1, own).squeeze(1).exp(),
                           chunk_elements)


def margin_confidence(
    features: torch.Tensor,
    centroids: torch.Tensor,
    assignments: torch.Tensor,
    *,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
) -> torch.Tensor:
    """Cosine similarity to the assigned centroid minus that to the nearest other centroid.

    With flat k-means the assigned centroid is the nearest, so this is the first/second
    margin; with nested (hierarchical) levels a sample's coarse centroid is the parent of its
    fine cluster, which need not be the nearest coarse centroid, and the margin is then
    negative where the sample sits closer to another coarse cluster.

    Args:
        features: ``[N, D]`` float embeddings (L2-normalised here).
        centroids: ``[K, D]`` float centroids, K >= 2 (L2-normalised here).
        assignments: ``[N]`` long, assigned centroid of each sample, in ``[0, K)``.
        chunk_elements: memory bound, see :data:`DEFAULT_CHUNK_ELEMENTS`.

    Returns:
        ``[N]`` float32 in ``[-2, 2]`` on the device of ``features``.
    """
    if len(centroids) < 2:
        raise ValueError(f"margin confidence needs at least 2 centroids, got {len(centroids)}")
    return _score_assigned(features, centroids, assignments,
                           lambda sims, own: sims.gather(1, own).squeeze(1) - sims.scatter(1, own, float("-inf")).amax(1),
                           chunk_elements)


def centroid_confidence(
    features: torch.Tensor,
    centroids: torch.Tensor,
    assignments: torch.Tensor,
    *,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
) -> torch.Tensor:
    """Cosine similarity of each sample to its assigned centroid.

    Args:
        features: ``[N, D]``; centroids: ``[K, D]``; assignments: ``[N]`` long in ``[0, K)``.

    Returns:
        ``[N]`` float32 in ``[-1, 1]`` on the device of ``features``.
    """
    return _score_assigned(features, centroids, assignments, lambda sims, own: sims.gather(1, own).squeeze(1),
                           chunk_elements)


def accepted_share(
    epoch: int,
    first_epoch: int,
    last_epoch: int,
    start: float,
    end: float,
    schedule: str = "linear",
) -> float:
    """Share of samples whose pseudo-labels are accepted at the round held at ``epoch``.

    Args:
        epoch: 0-based epoch of the clustering round.
        first_epoch: epoch at which the share is ``start``.
        last_epoch: epoch at which the share reaches ``end``; ``>= first_epoch``.
        start: share at ``first_epoch``, in ``[0, 1]``.
        end: share from ``last_epoch`` on, in ``[0, 1]``.
        schedule: ``linear`` interpolates between the two epochs (clamped outside);
            ``step`` is ``start`` before the midpoint of the two epochs and ``end`` from it
            on; ``constant`` is always ``start``.

    Returns:
        The share, in ``[0, 1]``.
    """
    if not (0.0 <= start <= 1.0 and 0.0 <= end <= 1.0):
        raise ValueError(f"start and end must lie in [0, 1], got start={start}, end={end}")
    if last_epoch < first_epoch:
        raise ValueError(f"last_epoch={last_epoch} must be >= first_epoch={first_epoch}")
    if schedule == "linear":
        span = last_epoch - first_epoch
        if span == 0:
            progress = float(epoch >= last_epoch)
        else:
            progress = min(max((epoch - first_epoch) / span, 0.0), 1.0)
        share = (1.0 - progress) * start + progress * end
    elif schedule == "step":
        share = end if epoch >= (first_epoch + last_epoch) / 2 else start
    elif schedule == "constant":
        share = start
    else:
        raise ValueError(f"unknown schedule {schedule!r}; use one of {SCHEDULES}")
    return min(max(share, 0.0), 1.0)


def accept_most_confident(
    assignments: torch.Tensor, confidence: torch.Tensor, share: float, per_cluster: bool = False
) -> torch.Tensor:
    """Keep the pseudo-labels of the most confident samples.

    Args:
        assignments: ``[N]`` long cluster index of each sample (-1: no assignment, never accepted first).
        confidence: ``[N]`` float confidence of each assignment (higher is surer).
        share: share of samples to accept, in ``[0, 1]``; ``round(share * N)`` samples
            (rounding half to even) are accepted.
        per_cluster: accept ``round(share * n_c)`` samples of every cluster ``c`` (of ``n_c``)
            instead of one global ranking, so that no cluster (no class) is left unlabelled
            because its confidences run lower than the others'.

    Returns:
        ``[N]`` long on the device of ``assignments``: the assignment for accepted
        samples, -1 for the others. Among equal confidences the lower index wins.
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must lie in [0, 1], got {share}")
    if assignments.shape != confidence.shape or assignments.dim() != 1:
        raise ValueError(
            f"assignments and confidence must both be [N], got {tuple(assignments.shape)} "
            f"and {tuple(confidence.shape)}"
        )
    if torch.isnan(confidence).any():
        raise ValueError("confidence contains NaN; fix the features or centroids first")
    order = torch.sort(confidence.to(assignments.device), descending=True, stable=True).indices
    labels = torch.full_like(assignments, -1)
    if not per_cluster:
        accepted = order[:round(share * len(assignments))]
    else:
        clusters = assignments[order]
        by_cluster = torch.sort(clusters, stable=True).indices  # confidence order kept inside each cluster
        sorted_clusters = clusters[by_cluster]
        _, counts = torch.unique_consecutive(sorted_clusters, return_counts=True)
        starts = torch.repeat_interleave(counts.cumsum(0) - counts, counts)
        rank = torch.arange(len(order), device=order.device) - starts
        quota = torch.repeat_interleave(torch.round(share * counts.double()).long(), counts)
        accepted = order[by_cluster[(rank < quota) & (sorted_clusters >= 0)]]
    labels[accepted] = assignments[accepted]
    return labels
