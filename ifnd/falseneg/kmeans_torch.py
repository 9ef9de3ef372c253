"""Spherical k-means in torch, on the features' device, optionally sharded over ranks.

The torch twin of :mod:`ifnd.falseneg.clustering` (faiss): the same objective (cosine
similarity of L2-normalised points to L2-normalised centroids), the same number of updates
(``niter`` centroid updates, then a final assignment), the same nesting of levels. What
differs is where it runs:

* on the device of the features (a GPU when training runs on one), with assignments by
  chunked matmul (no ``[N, K]`` matrix) and centroid sums and counts by ``index_add_``;
* sharded: with ``sharded=True`` every rank passes only its own rows and their dataset ids;
  each iteration all-reduces the ``[K, D + 1]`` sums and counts, so no rank ever holds the
  ``N x D`` features of another.

Every random choice is keyed by dataset id, not by row position, so 1 rank and several ranks
start from the same centroids and re-seed empty clusters with the same points; only the
order in which sums are reduced differs (float rounding).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ifnd.runtime import distributed as dist

DEFAULT_CHUNK_ELEMENTS = {"cpu": 1 << 24, "cuda": 1 << 28}
"""Largest similarity block computed at once, by device type: 16M floats (64 MiB) on a CPU, where
blocks of 16k rows at k = 1,000 ran the matmul and the arg-max 1.8x faster than blocks of 4k;
256M floats (1 GiB) on a GPU, so that k = 100,000 still gets blocks of 2,600 rows and the
device is not left waiting on kernel launches."""

_REDO_SEED_STRIDE = 15_485_863
"""Seed offset between restarts (a prime, so restarts of neighbouring seeds never collide)."""


@dataclass
class TorchKMeansResult:
    """One clustering of this rank's rows into K clusters (shared by every rank but the assignments).

    Attributes:
        assignments: ``[n]`` long, cluster of each of this rank's rows.
        centroids: ``[K, D]`` float32, L2-normalised, identical on every rank.
        inertia: sum over all ranks' points of the squared L2 distance between the normalised
            point and its centroid.
    """

    assignments: torch.Tensor
    centroids: torch.Tensor
    inertia: float


@dataclass(frozen=True)
class Shard:
    """Where this rank's rows sit in the data set.

    Attributes:
        ids: ``[n]`` long dataset id of each row, unique over ranks.
        id_space: ids lie in ``[0, id_space)``; keep it the same for every rank count (the data set size).
        sharded: the other rows are on the other ranks (sums, counts and picks are reduced over ranks).
    """

    ids: torch.Tensor
    id_space: int
    sharded: bool = False


def _sum(x: torch.Tensor, sharded: bool) -> torch.Tensor:
    return dist.sum_tensor(x) if sharded else x


def _gather(x: torch.Tensor, sharded: bool) -> torch.Tensor:
    return dist.gather(x) if sharded else x


def nearest_centroids(
    x: torch.Tensor, centroids: torch.Tensor, chunk_elements: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Largest inner product of each point with the centroids, a block of rows at a time.

    Args:
        x: ``[n, D]`` float32 points; centroids: ``[K, D]`` float32, on the same device.
        chunk_elements: most entries of one ``[rows, K]`` similarity block (None: :data:`DEFAULT_CHUNK_ELEMENTS`).

    Returns:
        ``best [n]`` float32, the largest inner product, and ``nearest [n]`` long, its centroid
        (the lowest index among equal products).
    """
    n, k = len(x), len(centroids)
    best = torch.empty(n, dtype=torch.float32, device=x.device)
    nearest = torch.empty(n, dtype=torch.long, device=x.device)
    chunk_elements = chunk_elements or DEFAULT_CHUNK_ELEMENTS.get(x.device.type, DEFAULT_CHUNK_ELEMENTS["cpu"])
    step = max(1, min(n, chunk_elements // k))
    block = torch.empty(step, k, dtype=torch.float32, device=x.device)
    transposed = centroids.T.contiguous()
    for start in range(0, n, step):
        rows = min(step, n - start)
        sims = torch.mm(x[start:start + rows], transposed, out=block[:rows])
        torch.max(sims, dim=1, out=(best[start:start + rows], nearest[start:start + rows]))
    return best, nearest


def _random_keys(ids: torch.Tensor, id_space: int, seed: int) -> torch.Tensor:
    """A seeded random permutation of ``[0, id_space)``, read at ``ids``: the same key for a dataset id on every rank."""
    perm = torch.randperm(id_space, generator=torch.Generator().manual_seed(seed))
    keys = torch.empty_like(perm)
    keys[perm] = torch.arange(id_space)
    return keys[ids.cpu()].to(ids.device)


def _pick_rows(x: torch.Tensor, ids: torch.Tensor, score: torch.Tensor, count: int, sharded: bool) -> torch.Tensor:
    """The ``count`` rows of lowest ``score`` over all ranks (ties: the lower dataset id), in that order.

    Args:
        x: ``[n, D]`` this rank's rows; ids: ``[n]`` long, their dataset ids (unique over ranks);
        score: ``[n]`` float64 or long; count: rows wanted, at most the total over ranks.

    Returns:
        ``[count, D]`` float32, identical on every rank. Only ``count`` scores and ids per rank
        and a ``[count, D]`` sum cross the ranks.
    """
    local = min(count, len(x))
    order = torch.argsort(ids)  # stable tie-break by id
    order = order[torch.argsort(score[order].double(), stable=True)[:local]]
    cand_score = torch.full((count,), float("inf"), dtype=torch.float64, device=x.device)
    cand_id = torch.full((count,), -1, dtype=torch.long, device=x.device)
    cand_score[:local], cand_id[:local] = score[order].double(), ids[order]
    all_score, all_id = _gather(cand_score, sharded), _gather(cand_id, sharded)
    by_id = torch.argsort(all_id)
    chosen = all_id[by_id[torch.argsort(all_score[by_id], stable=True)[:count]]]  # [count] ids
    sorted_chosen, slot_of = torch.sort(chosen)
    mine = ids[order]
    pos = torch.searchsorted(sorted_chosen, mine).clamp(max=count - 1)
    has = sorted_chosen[pos] == mine
    rows = x.new_zeros(count, x.shape[1])
    rows[slot_of[pos[has]]] = x[order[has]]
    return _sum(rows, sharded)


def _centroid_means(
    x: torch.Tensor, assignments: torch.Tensor, k: int, sharded: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Global ``[K, D]`` mean of each cluster's points (zero rows where empty) and ``[K]`` counts (float64)."""
    acc = torch.zeros(k, x.shape[1] + 1, dtype=torch.float32, device=x.device)
    acc[:, :-1].index_add_(0, assignments, x)
    acc[:, -1].index_add_(0, assignments, torch.ones_like(assignments, dtype=torch.float32))
    acc = _sum(acc, sharded)  # one all-reduce of sums and counts (counts exact below 2**24 per cluster)
    counts = acc[:, -1].double()
    return acc[:, :-1] / counts.clamp(min=1).unsqueeze(1).float(), counts


def _inertia(x: torch.Tensor, centroids: torch.Tensor, assignments: torch.Tensor, best: torch.Tensor | None,
             sharded: bool) -> float:
    """Global sum of ``|x - c|^2 = |x|^2 + |c|^2 - 2 x.c``, accumulated in float64."""
    dots = best if best is not None else (x * centroids[assignments]).sum(1)
    local = (x.double().pow(2).sum(1) + centroids.double().pow(2).sum(1)[assignments] - 2 * dots.double()).sum()
    return float(_sum(local.reshape(1), sharded)[0])


def initial_centroids(x: torch.Tensor, ids: torch.Tensor, id_space: int, k: int, seed: int,
                      sharded: bool = False) -> torch.Tensor:
    """The seeded random init: the ``k`` points (over all ranks) whose ids come first in a seeded permutation.

    Args:
        x: ``[n, D]`` this rank's points; ids: ``[n]`` their dataset ids in ``[0, id_space)``.

    Returns:
        ``[k, D]`` float32, L2-normalised, identical on every rank and for any split of the rows.
    """
    return F.normalize(_pick_rows(x, ids, _random_keys(ids, id_space, seed), k, sharded), dim=1)


def _run(x: torch.Tensor, ids: torch.Tensor, id_space: int, k: int, niter: int, seed: int, sharded: bool,
         chunk_elements: int | None) -> TorchKMeansResult:
    """One k-means run from the seeded random init."""
    centroids = initial_centroids(x, ids, id_space, k, seed, sharded)
    for _ in range(niter):
        best, nearest = nearest_centroids(x, centroids, chunk_elements)
        means, counts = _centroid_means(x, nearest, k, sharded)
        empty = counts == 0
        if bool(empty.any()):  # re-seed with the points farthest from their centroid (the same on every rank)
            means[empty] = _pick_rows(x, ids, best, int(empty.sum()), sharded)
        centroids = F.normalize(means, dim=1)
    best, nearest = nearest_centroids(x, centroids, chunk_elements)
    return TorchKMeansResult(nearest, centroids, _inertia(x, centroids, nearest, best, sharded))


def spherical_kmeans_torch(
    x: torch.Tensor,
    k: int,
    niter: int = 20,
    nredo: int = 1,
    seed: int = 0,
    *,
    shard: Shard | None = None,
    chunk_elements: int | None = None,
) -> TorchKMeansResult:
    """Cluster L2-normalised points by cosine similarity, on ``x``'s device.

    Args:
        x: ``[n, D]`` float points (normalised here), this rank's shard when ``sharded``.
        k: number of clusters, ``1 <= k <=`` the number of points over all ranks.
        niter: centroid updates; nredo: runs with seeds ``seed + r * stride``, the lowest inertia kept.
        seed: seed of the initialisation (k distinct points, chosen by dataset id).
        shard: this rank's rows in the data set (default: all rows, ids ``arange(n)``).
        chunk_elements: memory bound of the assignment blocks (None: by device, :data:`DEFAULT_CHUNK_ELEMENTS`).

    Returns:
        The clustering (assignments of this rank's rows; centroids and inertia global).

    Raises:
        ValueError: for a non-2-D ``x``, NaN/inf values, or ``k`` outside ``[1, N]``.
    """
    if x.dim() != 2:
        raise ValueError(f"x must be a 2-D [N, D] tensor, got shape {tuple(x.shape)}; reshape it first")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x contains NaN or inf; drop or repair those rows before clustering")
    shard = shard or Shard(torch.arange(len(x)), len(x))
    ids, sharded = shard.ids.to(x.device, torch.long), shard.sharded
    total = int(_sum(torch.tensor([len(x)], device=x.device), sharded)[0])
    if not 1 <= k <= total:
        raise ValueError(f"k={k} must be between 1 and the number of points N={total}; lower k")
    points = F.normalize(x.float(), dim=1)
    runs = (_run(points, ids, shard.id_space, k, niter, seed + r * _REDO_SEED_STRIDE, sharded, chunk_elements)
            for r in range(nredo))
    return min(runs, key=lambda result: result.inertia)


def _nest_under(points: torch.Tensor, fine: TorchKMeansResult, parent: TorchKMeansResult,
                sharded: bool) -> TorchKMeansResult:
    """Coarse level whose clusters are unions of fine clusters (as :func:`ifnd.falseneg.clustering._nest_under`).

    Each point gets its fine cluster's parent; centroids are the normalised mean of the member
    points, and a coarse cluster without points keeps ``parent``'s centroid.
    """
    assignments = parent.assignments[fine.assignments]
    means, counts = _centroid_means(points, assignments, len(parent.centroids), sharded)
    empty = (counts == 0) | ~means.any(1)
    means[empty] = parent.centroids[empty]
    centroids = F.normalize(means, dim=1)
    return TorchKMeansResult(assignments, centroids, _inertia(points, centroids, assignments, None, sharded))


def multi_level_kmeans_torch(
    x: torch.Tensor,
    ks: Sequence[int],
    hierarchical: bool = False,
    seed: int = 0,
    **options: Any,
) -> list[TorchKMeansResult]:
    """Cluster the same points at several granularities (as :func:`ifnd.falseneg.clustering.multi_level_kmeans`).

    Args:
        x, seed: as in :func:`spherical_kmeans_torch`; options: its keyword arguments ``niter``, ``nredo``,
            ``shard``, ``chunk_elements``.
        ks: distinct numbers of clusters, one per level.
        hierarchical: False runs each level independently (level i uses seed ``seed + i``); True
            clusters the points at the largest k, then that level's centroids (identical on every
            rank, so not sharded) into the next smaller k with seed ``seed + level``, and so on;
            labels nest, and each coarse level's centroids and inertia come from the points.

    Returns:
        One :class:`TorchKMeansResult` per entry of ``ks``, in the order of ``ks``.
    """
    if len(ks) == 0 or len(set(ks)) != len(ks):
        raise ValueError(f"ks must be a non-empty list of distinct cluster counts, got {list(ks)}")
    if not hierarchical:
        return [spherical_kmeans_torch(x, k, seed=seed + i, **options) for i, k in enumerate(ks)]
    points = F.normalize(x.float(), dim=1)
    sharded = options.get("shard") is not None and options["shard"].sharded
    finest, *coarser = sorted(ks, reverse=True)
    by_k = {finest: spherical_kmeans_torch(points, finest, seed=seed, **options)}
    previous = by_k[finest]
    for level, k in enumerate(coarser, start=1):
        parent = spherical_kmeans_torch(previous.centroids, k, seed=seed + level, **{**options, "shard": None})
        previous = by_k[k] = _nest_under(points, previous, parent, sharded)
    return [by_k[k] for k in ks]
