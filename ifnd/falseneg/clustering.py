"""Spherical k-means with faiss, at one or several granularities.

Embeddings are L2-normalised and clustered by cosine similarity (faiss ``Clustering`` with
``spherical = True`` on an inner-product index), on the GPU when faiss has one, otherwise
on the CPU. All points are used for training (faiss' default subsampling is disabled).

Several granularities (method notes, step 2) are either independent runs per k, or nested:
the finest level's centroids are clustered again, so that every fine cluster lies inside
exactly one coarse cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import faiss
import numpy as np
import scipy.sparse

INIT_METHODS = {
    "random": faiss.ClusteringInitMethod_RANDOM,
    "kmeans++": faiss.ClusteringInitMethod_KMEANS_PLUS_PLUS,
    "afk-mc2": faiss.ClusteringInitMethod_AFK_MC2,
}
"""Names accepted by ``init``, mapped to faiss' centroid initialisation methods.

``random`` is the default. faiss runs the other two single-threaded on the host, even when
the k-means iterations run on the GPU: k-means++ makes K passes over all N points
(O(N K D)) and AFK-MC2 costs O(m K^2 D) (chain length m = 50). Measured on 2 CPU cores
(``tools/bench_kmeans.py``), they improved the inertia by under 1% but cost one to several
times the whole k-means run at N = 1e5, K = 2e3, and scale badly towards N = 1.28M,
K = 25k-100k.
"""

_INERTIA_CHUNK_ROWS = 65536


@dataclass
class KMeansResult:
    """One clustering of N points into K clusters.

    Attributes:
        assignments: ``[N]`` int64, cluster index of each point.
        centroids: ``[K, D]`` float32, L2-normalised cluster centres.
        inertia: sum over points of the squared L2 distance between the L2-normalised
            point and its centroid.
    """

    assignments: np.ndarray
    centroids: np.ndarray
    inertia: float


def faiss_gpu_available() -> bool:
    """Whether this faiss build has GPU support and sees at least one GPU."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Validate points and L2-normalise them.

    Args:
        x: ``[N, D]`` array of any float dtype, finite values.

    Returns:
        ``[N, D]`` C-contiguous float32, each row of unit norm (an all-zero row stays zero).

    Raises:
        ValueError: if ``x`` is not 2-D or contains NaN or inf.
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"x must be a 2-D [N, D] array, got shape {x.shape}; reshape it first")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise ValueError("x contains NaN or inf; drop or repair those rows before clustering")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, np.finfo(np.float32).tiny)


def inertia(x: np.ndarray, centroids: np.ndarray, assignments: np.ndarray) -> float:
    """Sum of squared L2 distances between points and their assigned centroids.

    Args:
        x: ``[N, D]`` float32 points.
        centroids: ``[K, D]`` float centroids.
        assignments: ``[N]`` integer cluster index of each point.

    Returns:
        The sum, accumulated in float64 over chunks of rows (no ``[N, D]`` temporary).
    """
    total = 0.0
    for start in range(0, len(x), _INERTIA_CHUNK_ROWS):
        rows = slice(start, start + _INERTIA_CHUNK_ROWS)
        diff = x[rows] - centroids[assignments[rows]]
        total += float(np.einsum("nd,nd->", diff, diff, dtype=np.float64))
    return total


def cluster_means(x: np.ndarray, assignments: np.ndarray, k: int) -> np.ndarray:
    """Mean of the points of each cluster.

    Args:
        x: ``[N, D]`` float points.
        assignments: ``[N]`` integer cluster index of each point, in ``[0, k)``.
        k: number of clusters.

    Returns:
        ``[K, D]`` float32 means; all-zero rows for clusters without points.
    """
    n = len(x)
    membership = scipy.sparse.csr_matrix(
        (np.ones(n, dtype=np.float32), (assignments, np.arange(n))), shape=(k, n)
    )
    counts = np.bincount(assignments, minlength=k).astype(np.float32)
    sums = np.asarray(membership @ np.asarray(x, dtype=np.float32), dtype=np.float32)
    return sums / np.maximum(counts, 1.0)[:, None]


def _resolve_use_gpu(use_gpu: bool | None) -> bool:
    if use_gpu is None:
        return faiss_gpu_available()
    if use_gpu and not faiss_gpu_available():
        raise RuntimeError(
            "use_gpu=True but this faiss build has no GPU support or sees no GPU; "
            "install a faiss GPU build or pass use_gpu=None/False"
        )
    return use_gpu


def _train_and_assign(
    x: np.ndarray, k: int, niter: int, nredo: int, seed: int, init: str, use_gpu: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Run faiss spherical k-means on normalised points, then assign every point.

    Args:
        x: ``[N, D]`` float32 L2-normalised points, ``1 <= k <= N``.

    Returns:
        ``[K, D]`` float32 normalised centroids and ``[N]`` int64 index of the centroid
        with the largest inner product with each point.
    """
    n, d = x.shape
    params = faiss.ClusteringParameters()
    params.spherical = True
    params.niter = niter
    params.nredo = nredo
    params.seed = seed
    params.init_method = INIT_METHODS[init]
    params.max_points_per_centroid = -(-n // k)  # ceil(N / K): never subsample
    params.min_points_per_centroid = 1  # k <= N is checked by the caller; no warnings
    clus = faiss.Clustering(d, k, params)

    resources = faiss.StandardGpuResources() if use_gpu else None
    index = faiss.IndexFlatIP(d)
    if resources is not None:
        index = faiss.index_cpu_to_gpu(resources, 0, index)
    clus.train(x, index)
    centroids = faiss.vector_float_to_array(clus.centroids).reshape(k, d)

    index.reset()
    index.add(centroids)
    _, nearest = index.search(x, 1)
    return centroids, nearest[:, 0].astype(np.int64)


def spherical_kmeans(
    x: np.ndarray,
    k: int,
    niter: int = 20,
    nredo: int = 1,
    seed: int = 0,
    init: str = "random",
    use_gpu: bool | None = None,
) -> KMeansResult:
    """Cluster L2-normalised points by cosine similarity.

    Args:
        x: ``[N, D]`` array of any float dtype; normalised here.
        k: number of clusters, ``1 <= k <= N``.
        niter: k-means iterations per run.
        nredo: runs with different seeds; the best faiss objective is kept.
        seed: random seed of the initialisation.
        init: centroid initialisation, one of :data:`INIT_METHODS`.
        use_gpu: True forces the GPU, False the CPU, None uses the GPU when faiss sees one.

    Returns:
        The clustering; ``assignments`` is the nearest centroid of each point by inner
        product and ``inertia`` is computed on the normalised points.

    Raises:
        ValueError: for bad shapes, NaN/inf values, ``k`` outside ``[1, N]`` or an
            unknown ``init``.
    """
    points = normalize_rows(x)
    n = len(points)
    if not 1 <= k <= n:
        raise ValueError(f"k={k} must be between 1 and the number of points N={n}; lower k")
    if init not in INIT_METHODS:
        raise ValueError(f"unknown init {init!r}; use one of {sorted(INIT_METHODS)}")
    centroids, assignments = _train_and_assign(
        points, k, niter, nredo, seed, init, _resolve_use_gpu(use_gpu)
    )
    return KMeansResult(assignments, centroids, inertia(points, centroids, assignments))


def _nest_under(points: np.ndarray, fine: KMeansResult, parent: KMeansResult) -> KMeansResult:
    """Coarse level whose clusters are unions of fine clusters.

    Args:
        points: ``[N, D]`` float32 normalised points.
        fine: clustering of the points into K_f clusters.
        parent: clustering of ``fine.centroids`` (``[K_f, D]``) into K_c clusters.

    Returns:
        Each point labelled with its fine cluster's parent; centroids are the normalised
        mean of the member points (a coarse cluster without points, or whose mean is zero,
        keeps the centroid of ``parent``); inertia on the points.
    """
    assignments = parent.assignments[fine.assignments]
    means = cluster_means(points, assignments, len(parent.centroids))
    empty = ~means.any(axis=1)
    means[empty] = parent.centroids[empty]
    centroids = normalize_rows(means)
    return KMeansResult(assignments, centroids, inertia(points, centroids, assignments))


def multi_level_kmeans(
    x: np.ndarray,
    ks: Sequence[int],
    hierarchical: bool = False,
    niter: int = 20,
    nredo: int = 1,
    seed: int = 0,
    init: str = "random",
    use_gpu: bool | None = None,
) -> list[KMeansResult]:
    """Cluster the same points at several granularities.

    Args:
        x: ``[N, D]`` array of any float dtype; normalised here.
        ks: distinct numbers of clusters, one per level, each in ``[1, N]``.
        hierarchical: False runs k-means independently per level (level i uses seed
            ``seed + i``). True clusters the points at the largest k, then that level's
            centroids into the next smaller k, and so on; labels nest, and each coarse
            level's centroids and inertia are recomputed from the points.
        niter, nredo, seed, init, use_gpu: as in :func:`spherical_kmeans`.

    Returns:
        One :class:`KMeansResult` per entry of ``ks``, in the order of ``ks``.

    Raises:
        ValueError: if ``ks`` is empty or has duplicates, or as :func:`spherical_kmeans`.
    """
    if len(ks) == 0 or len(set(ks)) != len(ks):
        raise ValueError(f"ks must be a non-empty list of distinct cluster counts, got {list(ks)}")
    options = dict(niter=niter, nredo=nredo, init=init, use_gpu=use_gpu)
    if not hierarchical:
        return [spherical_kmeans(x, k, seed=seed + i, **options) for i, k in enumerate(ks)]

    points = normalize_rows(x)
    finest, *coarser = sorted(ks, reverse=True)
    by_k = {finest: spherical_kmeans(points, finest, seed=seed, **options)}
    previous = by_k[finest]
    for level, k in enumerate(coarser, start=1):
        parent = spherical_kmeans(previous.centroids, k, seed=seed + level, **options)
        previous = by_k[k] = _nest_under(points, previous, parent)
    return [by_k[k] for k in ks]
