"""Torch spherical k-means: against faiss from the same init, sharded over 2 gloo processes, empty clusters."""

import faiss
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ifnd.config import ConfigError
from ifnd.falseneg.acceptance import accept_most_confident, centroid_confidence
from ifnd.falseneg.clustering import inertia
from ifnd.falseneg.kmeans_torch import (
    initial_centroids,
    multi_level_kmeans_torch,
    nearest_centroids,
    spherical_kmeans_torch,
)
from ifnd.falseneg.label_round import cluster_levels, resolve_backend
from ifnd.runtime import distributed as dist
from ifnd.runtime.spawn import run_ranks


def _clustered(n: int, centres: int, seed: int = 0, noise: float = 0.2, dim: int = 16) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    means = F.normalize(torch.randn(centres, dim, generator=gen), dim=1)
    points = means[torch.randint(0, centres, (n,), generator=gen)] + noise * torch.randn(n, dim, generator=gen)
    return F.normalize(points, dim=1)


def test_nearest_centroids_by_hand_in_small_blocks():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [-1.0, 0.0]])
    centroids = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    best, nearest = nearest_centroids(x, centroids, chunk_elements=2)  # one row per block
    assert nearest.tolist() == [1, 0, 0, 0]  # [-1, 0] ties at 0: the lower index
    assert torch.allclose(best, torch.tensor([1.0, 1.0, 0.8, 0.0]))


def test_torch_matches_faiss_from_the_same_init():
    x, k = _clustered(3000, 40), 30
    ids = torch.arange(len(x))
    result = spherical_kmeans_torch(x, k, niter=10, seed=5)
    params = faiss.ClusteringParameters()
    params.spherical, params.niter = True, 10
    params.max_points_per_centroid, params.min_points_per_centroid = len(x), 1
    clus = faiss.Clustering(x.shape[1], k, params)
    faiss.copy_array_to_vector(initial_centroids(x, ids, len(x), k, 5).numpy().ravel(), clus.centroids)
    index = faiss.IndexFlatIP(x.shape[1])
    clus.train(x.numpy(), index)
    centroids = faiss.vector_float_to_array(clus.centroids).reshape(k, -1)
    index.reset()
    index.add(centroids)
    faiss_assign = index.search(x.numpy(), 1)[1][:, 0]
    assert (result.assignments.numpy() == faiss_assign).mean() >= 0.99
    faiss_inertia = inertia(x.numpy(), centroids, faiss_assign)
    assert result.inertia == pytest.approx(faiss_inertia, rel=0.01)
    assert result.inertia == pytest.approx(inertia(x.numpy(), result.centroids.numpy(), result.assignments.numpy()),
                                           rel=1e-5)


def test_empty_clusters_are_reseeded_with_the_farthest_points():
    directions = torch.eye(4)
    x = directions.repeat_interleave(5, dim=0)  # 4 directions, 5 copies each
    ids = torch.arange(len(x))
    seeds = [s for s in range(8) if len(torch.unique(initial_centroids(x, ids, len(x), 4, s), dim=0)) < 4]
    assert seeds, "no seed starts from duplicate centroids: the test would not reach an empty cluster"
    for seed in seeds:
        result = spherical_kmeans_torch(x, 4, niter=5, seed=seed)
        assert torch.bincount(result.assignments, minlength=4).tolist() == [5, 5, 5, 5]
        assert result.inertia == pytest.approx(0.0, abs=1e-5)
        assert torch.isfinite(result.centroids).all()


def test_more_clusters_than_points_is_rejected():
    with pytest.raises(ValueError, match="k=5"):
        spherical_kmeans_torch(torch.randn(4, 3), 5)


def test_hierarchical_levels_nest():
    x = _clustered(600, 12, seed=1)
    fine, coarse = multi_level_kmeans_torch(x, [24, 6], hierarchical=True, niter=5)
    parent = torch.full((24,), -1)
    parent[fine.assignments] = coarse.assignments
    assert torch.equal(parent[fine.assignments], coarse.assignments)  # one coarse label per fine cluster


def test_backend_choice():
    assert resolve_backend("auto", torch.device("cuda", 0)) == "torch"
    assert resolve_backend("auto", torch.device("cpu")) == "faiss"
    assert resolve_backend("faiss", torch.device("cuda", 0)) == "faiss"
    with pytest.raises(ConfigError, match="kmeans_backend"):
        resolve_backend("sklearn", torch.device("cpu"))
    with pytest.raises(ConfigError, match="kmeans_init"):
        cluster_levels(torch.randn(10, 3), torch.arange(10), 10, [2], centroid_confidence, backend="torch",
                       init="kmeans++")


def _rounds(x: torch.Tensor, ks: list[int]) -> list[tuple[torch.Tensor, list[float]]]:
    """A flat and a hierarchical round on this rank's shard (every world-th row): ``[L, N]`` tables, inertias."""
    ids = torch.arange(dist.rank(), len(x), dist.world_size())
    out = []
    for hierarchical in (False, True):
        levels = cluster_levels(x[ids], ids, len(x), ks, centroid_confidence, backend="torch",
                                hierarchical=hierarchical, niter=10, seed=3, sharded=dist.world_size() > 1)
        table = torch.stack([accept_most_confident(level.assignments, level.confidence, 0.6) for level in levels])
        out.append((table, [level.inertia for level in levels]))
    return out


@pytest.mark.slow
@pytest.mark.distributed
def test_two_gloo_processes_match_one():
    x, ks = _clustered(4000, 30, seed=2), [20, 40]
    rank0, rank1 = run_ranks(_rounds, 2, x, ks)
    for (one_table, one_inertia), (table0, inertia0), (table1, _) in zip(_rounds(x, ks), rank0, rank1):
        assert torch.equal(table0, table1)  # the same table on every rank
        assert (table0 == one_table).float().mean() >= 0.999
        assert inertia0 == pytest.approx(one_inertia, rel=1e-3)
        assert np.all(one_table.numpy().max(1) >= 0)  # the table holds labels
