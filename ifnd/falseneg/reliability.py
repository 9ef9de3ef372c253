"""Label-free reliability signals of a clustering round: how much its pseudo-labels can be trusted.

Each signal is computed from assignments, embeddings and centroids alone (no true class), per
cluster and for a whole level, so that a guard can keep the clusters it trusts and drop the rest
(:mod:`ifnd.falseneg.guard`). Higher is more reliable for every signal except ``largest_share``.

Pair signals estimate, for the pairs that one clustering puts together (what the detector would
flag), the share that another clustering also puts together: a restart of k-means (stability), the
clusters of another augmented view, another level, or the previous round. Instead of the
``N^2`` pairs they draw, for every assigned sample, one random other member of its cluster
(:func:`sample_cluster_partners`, O(N log N)); a cluster's agreement is the mean over its anchors,
and a level's weighs each cluster by its ordered pairs ``n_c (n_c - 1)``, so that it estimates the
agreement of a uniformly drawn flagged pair, the same weighting as pair precision.

Assignments are ``[N]`` long tensors, cluster index in ``[0, K)`` and ``-1`` for a sample that is
unassigned (not accepted, or never embedded): it is neither an anchor nor a partner, and a pair
with an unassigned member in the other clustering counts as a disagreement.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ifnd.falseneg.acceptance import margin_confidence
from ifnd.falseneg.clustering import spherical_kmeans


def _check_assignments(*assignments: torch.Tensor) -> None:
    shapes = {tuple(a.shape) for a in assignments}
    if len(shapes) != 1 or any(a.dim() != 1 for a in assignments):
        raise ValueError(f"assignments must all be [N] with the same N, got shapes {sorted(shapes)}")


def cluster_sizes(labels: torch.Tensor, num_clusters: int) -> torch.Tensor:
    """``[K]`` long, members of each cluster (-1 entries of ``labels [N]`` are not counted)."""
    _check_assignments(labels)
    return torch.bincount(labels[labels >= 0], minlength=num_clusters)[:num_clusters]


def sample_cluster_partners(labels: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One uniformly random other member of its cluster for every assigned sample of a cluster of >= 2.

    Args:
        labels: ``[N]`` long, cluster of each sample (-1: unassigned).
        generator: the random stream (None: torch's global one).

    Returns:
        ``(anchors [P], partners [P])`` long sample indices, ``anchors[p] != partners[p]`` and
        ``labels[anchors[p]] == labels[partners[p]] >= 0``. O(N log N) time, O(N) memory.
    """
    _check_assignments(labels)
    assigned = torch.nonzero(labels >= 0).squeeze(1)
    shuffled = assigned[torch.randperm(len(assigned), generator=generator)]
    order = shuffled[torch.sort(labels[shuffled], stable=True).indices]  # grouped by cluster
    _, counts = torch.unique_consecutive(labels[order], return_counts=True)
    starts = torch.repeat_interleave(counts.cumsum(0) - counts, counts)
    sizes = torch.repeat_interleave(counts, counts)
    position = torch.arange(len(order)) - starts
    keep = sizes >= 2
    # a shift in [1, n - 1] inside the group: never the anchor itself, uniform over the other members
    shift = 1 + (torch.rand(len(order), generator=generator, dtype=torch.float64) * (sizes - 1)).long()
    partner = starts + (position + shift) % sizes
    return order[keep], order[partner[keep]]


def pair_agreement_per_cluster(reference: torch.Tensor, other: torch.Tensor, num_clusters: int,
                               generator: torch.Generator | None = None) -> torch.Tensor:
    """Per cluster of ``reference``: the share of its pairs that ``other`` also puts together.

    Args:
        reference: ``[N]`` long clusters in ``[0, K)`` whose pairs are checked (-1: unassigned).
        other: ``[N]`` long, another clustering of the same samples (any cluster indices; -1 disagrees).
        num_clusters: K of ``reference``.
        generator: the random stream of :func:`sample_cluster_partners`.

    Returns:
        ``[K]`` float, NaN for a cluster with fewer than 2 members. A sample estimate with one
        drawn pair per member.
    """
    _check_assignments(reference, other)
    anchors, partners = sample_cluster_partners(reference, generator)
    agree = (other[anchors] == other[partners]) & (other[anchors] >= 0)
    return _mean_per_cluster(reference[anchors], agree.double(), num_clusters)


def partner_closeness_per_cluster(features: torch.Tensor, labels: torch.Tensor, num_clusters: int,
                                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Per cluster: how often a drawn member is closer to an anchor than a random assigned sample is.

    For every anchor of :func:`sample_cluster_partners`, one uniformly random assigned sample is drawn too;
    the value is the share of anchors whose partner has the larger cosine similarity (ties count half): an
    AUC of co-clustered against random pairs, 0.5 for clusters no tighter than chance, near 1.0 for tight
    ones. Scale-free, so comparable between embeddings whose cosines spread differently.

    Args:
        features: ``[N, D]`` float embeddings.
        labels: ``[N]`` long clusters in ``[0, K)`` (-1: unassigned, never drawn).
        num_clusters: K.

    Returns:
        ``[K]`` float, NaN for a cluster with fewer than 2 members. O(N log N + P D) time, P the anchors.
    """
    anchors, partners = sample_cluster_partners(labels, generator)
    assigned = torch.nonzero(labels >= 0).squeeze(1)
    randoms = assigned[torch.randint(0, max(len(assigned), 1), (len(anchors),), generator=generator)]
    def unit(rows: torch.Tensor) -> torch.Tensor:  # only the drawn rows: O(P D), not O(N D)
        return F.normalize(features[rows].float(), dim=1)

    anchor = unit(anchors)
    to_partner = (anchor * unit(partners)).sum(1)
    to_random = (anchor * unit(randoms)).sum(1)
    closer = (to_partner > to_random).double() + 0.5 * (to_partner == to_random).double()
    return _mean_per_cluster(labels[anchors], closer, num_clusters)


def _mean_per_cluster(clusters: torch.Tensor, values: torch.Tensor, num_clusters: int) -> torch.Tensor:
    """``[K]`` float mean of ``values [P]`` by cluster ``clusters [P]`` (long in ``[0, K)``); NaN where none."""
    sums = torch.bincount(clusters, weights=values, minlength=num_clusters)[:num_clusters].double()
    counts = torch.bincount(clusters, minlength=num_clusters)[:num_clusters].double()
    return torch.where(counts > 0, sums / counts.clamp(min=1), torch.full_like(sums, math.nan)).float()


def ordered_pairs(sizes: torch.Tensor) -> torch.Tensor:
    """``[K]`` float64 ordered pairs ``n (n - 1)`` of clusters of ``sizes [K]``."""
    return (sizes * (sizes - 1)).double()


def pair_weighted_mean(per_cluster: torch.Tensor, sizes: torch.Tensor) -> float:
    """Mean of a per-cluster value ``[K]`` weighted by each cluster's ordered pairs ``n (n - 1)``
    (``sizes [K]``); NaN entries and clusters of < 2 are left out; NaN when nothing is left."""
    weights = ordered_pairs(sizes) * ~torch.isnan(per_cluster)
    total = float(weights.sum())
    return float((torch.nan_to_num(per_cluster.double()) * weights).sum() / total) if total > 0 else math.nan


def pair_agreement(reference: torch.Tensor, other: torch.Tensor, generator: torch.Generator | None = None) -> float:
    """The share of ``reference``'s co-clustered pairs (``[N]`` long, -1 unassigned) that ``other [N]``
    also puts together: :func:`pair_agreement_per_cluster` weighted by pairs; NaN without pairs.

    With ``other`` a k-means restart this is co-association stability; with another level, the
    previous round, or the clusters of a second augmented view, the agreement between them."""
    k = int(reference.max()) + 1 if bool((reference >= 0).any()) else 0
    return pair_weighted_mean(pair_agreement_per_cluster(reference, other, k, generator), cluster_sizes(reference, k))


def assignment_agreement(first: torch.Tensor, second: torch.Tensor) -> float:
    """Share of samples that two assignments ``[N]`` with the SAME cluster indices (e.g. two augmented
    views assigned to one set of centroids) put in the same cluster, over samples assigned in both;
    NaN when none is."""
    _check_assignments(first, second)
    both = (first >= 0) & (second >= 0)
    return float((first[both] == second[both]).double().mean()) if bool(both.any()) else math.nan


def size_entropy(labels: torch.Tensor, num_clusters: int) -> float:
    """Entropy of the cluster sizes of ``labels [N]`` over ``log K``: 1.0 for equal clusters, 0.0 for
    one cluster holding every assigned sample (K = 1 or nothing assigned: 0.0)."""
    sizes = cluster_sizes(labels, num_clusters).double()
    if num_clusters < 2 or sizes.sum() == 0:
        return 0.0
    p = sizes[sizes > 0] / sizes.sum()
    return float(-(p * p.log()).sum() / math.log(num_clusters))


def largest_share(labels: torch.Tensor, num_clusters: int) -> float:
    """Share of the assigned samples of ``labels [N]`` in the largest cluster (0.0 when none is assigned)."""
    sizes = cluster_sizes(labels, num_clusters)
    return float(sizes.max() / sizes.sum()) if int(sizes.sum()) else 0.0


def margin_per_cluster(features: torch.Tensor, centroids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per cluster: mean over its members of cos(sample, own centroid) - cos(sample, nearest other centroid).

    Args:
        features: ``[N, D]`` float embeddings (L2-normalised inside).
        centroids: ``[K, D]`` float, K >= 2.
        labels: ``[N]`` long cluster of each sample in ``[0, K)``, -1 left out.

    Returns:
        ``[K]`` float, NaN for an empty cluster. O(N K D) time in row chunks.
    """
    _check_assignments(labels)
    kept = labels >= 0
    margins = margin_confidence(features[kept], centroids, labels[kept]).double().cpu()
    return _mean_per_cluster(labels[kept].cpu(), margins, len(centroids))


def sample_mean(per_cluster: torch.Tensor, sizes: torch.Tensor) -> float:
    """Mean of a per-cluster value ``[K]`` weighted by cluster size ``sizes [K]`` (NaN entries left out)."""
    weights = sizes.double() * ~torch.isnan(per_cluster)
    total = float(weights.sum())
    return float((torch.nan_to_num(per_cluster.double()) * weights).sum() / total) if total > 0 else math.nan


def restart_assignments(features: torch.Tensor, labels: torch.Tensor, num_clusters: int, points_per_cluster: int,
                        niter: int, generator: torch.Generator, nredo: int = 1) -> torch.Tensor:
    """An independent k-means restart on a random subsample, for the stability signal.

    Args:
        features: ``[N, D]`` float embeddings.
        labels: ``[N]`` long, the round's assignments (-1: not embedded; never drawn).
        num_clusters: K of the restart (lowered to the subsample size if that is smaller).
        points_per_cluster: the subsample holds ``min(assigned, points_per_cluster * K)`` samples, so the
            restart's cost is that share of the round's k-means and its density per cluster is the same on
            any data set (the signal stays comparable across settings).
        niter, nredo: k-means iterations and runs (the best objective kept): those of the round's clustering,
            so that the restart is another run of the same procedure (its local optima included).
        generator: draws the subsample and the restart's seed.

    Returns:
        ``[N]`` long, the restart's cluster of each subsampled sample, -1 elsewhere.
    """
    _check_assignments(labels)
    assigned = torch.nonzero(labels >= 0).squeeze(1)
    drawn = assigned[torch.randperm(len(assigned), generator=generator)[:points_per_cluster * num_clusters]]
    restart = torch.full_like(labels, -1)
    if len(drawn) == 0:
        return restart
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    result = spherical_kmeans(features[drawn].float().cpu().numpy(), min(num_clusters, len(drawn)), niter=niter,
                              nredo=nredo, seed=seed)
    restart[drawn] = torch.from_numpy(result.assignments).to(labels.dtype)
    return restart


def level_signals(features: torch.Tensor, accepted: torch.Tensor, centroids: torch.Tensor, restart: torch.Tensor,
                  generator: torch.Generator | None = None) -> dict[str, float]:
    """The signals of one level that every round can compute.

    Args:
        features: ``[N, D]`` float embeddings.
        accepted: ``[N]`` long, the level's accepted pseudo-labels in ``[0, K)`` (-1: not accepted).
        centroids: ``[K, D]`` float, the level's centroids.
        restart: ``[N]`` long, :func:`restart_assignments` (-1 outside its subsample); stability and margin
            are computed on the accepted samples of that subsample only (O(M K D), M its size).
        generator: the pair-sampling stream.

    Returns:
        ``stability`` (pair agreement of the accepted pairs with the restart), ``closeness``
        (:func:`partner_closeness_per_cluster`), ``margin`` (:func:`margin_per_cluster`, averaged over
        samples), ``size_entropy`` and ``largest_share`` (of the accepted table).
    """
    k = len(centroids)
    sub = torch.where(restart >= 0, accepted, torch.full_like(accepted, -1))
    sub_sizes = cluster_sizes(sub, k)
    margin = margin_per_cluster(features, centroids, sub) if k >= 2 else torch.zeros(k)
    return {"stability": pair_weighted_mean(pair_agreement_per_cluster(sub, restart, k, generator), sub_sizes),
            "closeness": pair_weighted_mean(partner_closeness_per_cluster(features, sub, k, generator), sub_sizes),
            "margin": sample_mean(margin, sub_sizes),
            "size_entropy": size_entropy(accepted, k), "largest_share": largest_share(accepted, k)}
