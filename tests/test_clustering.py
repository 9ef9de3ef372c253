from __future__ import annotations

import numpy as np
import pytest

from ifnd.falseneg.clustering import (
    INIT_METHODS,
    faiss_gpu_available,
    inertia,
    multi_level_kmeans,
    spherical_kmeans,
)


def _directions(degrees: list[float], scales: list[float]) -> np.ndarray:
    radians = np.deg2rad(degrees)
    return np.stack([np.cos(radians), np.sin(radians)], axis=1) * np.asarray(scales)[:, None]


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to renaming the clusters."""
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_axis_groups_found_exactly() -> None:
    # Two points on each axis, with different norms: normalisation makes them coincide.
    # k-means++ never seeds on a point that coincides with a seed, so the result is exact.
    x = np.array([[2, 0, 0], [5, 0, 0], [0, 3, 0], [0, 1, 0], [0, 0, 4], [0, 0, 7]], dtype=float)
    result = spherical_kmeans(x, 3, niter=10, init="kmeans++")
    assert result.assignments.dtype == np.int64
    assert result.centroids.dtype == np.float32
    assert _same_partition(result.assignments, np.array([0, 0, 1, 1, 2, 2]))
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_allclose(result.centroids[result.assignments], unit, atol=1e-6)
    assert result.inertia == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize("init", sorted(INIT_METHODS))
def test_every_init_separates_jittered_axes(init: str) -> None:
    truth = np.repeat(np.arange(3), 10)
    x = np.eye(3)[truth] + 0.05 * np.random.default_rng(0).standard_normal((30, 3))
    result = spherical_kmeans(x.astype(np.float16), 3, niter=10, init=init)
    assert _same_partition(result.assignments, truth)
    assert np.linalg.norm(result.centroids, axis=1) == pytest.approx(np.ones(3), abs=1e-6)


def test_one_cluster_uses_every_point_and_reports_inertia() -> None:
    # 300 points > faiss' default 256 per centroid: a subsample would shift the centroid.
    rng = np.random.default_rng(0)
    x = np.abs(rng.standard_normal((300, 4)))
    x[:20, 3] += 5.0  # the first 20 points lean towards axis 3
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    expected = unit.mean(axis=0) / np.linalg.norm(unit.mean(axis=0))
    result = spherical_kmeans(x, 1, niter=1)
    np.testing.assert_allclose(result.centroids[0], expected, atol=1e-6)
    assert result.inertia == pytest.approx(np.sum((unit - expected) ** 2), rel=1e-5)


def test_inertia_at_45_degrees() -> None:
    result = spherical_kmeans(np.array([[1.0, 0.0], [0.0, 1.0]]), 1)
    np.testing.assert_allclose(result.centroids[0], [2**-0.5, 2**-0.5], atol=1e-6)
    assert result.inertia == pytest.approx(4 - 2 * np.sqrt(2), rel=1e-6)


def test_inertia_helper() -> None:
    x = np.array([[1, 0], [0, 1], [1, 0]], dtype=np.float32)
    centroids = np.array([[1, 0], [0, 0]], dtype=np.float32)
    assert inertia(x, centroids, np.array([0, 0, 1])) == pytest.approx(3.0)


@pytest.mark.parametrize(
    ("x", "k", "init", "message"),
    [
        (np.ones((3, 2)), 4, "random", "lower k"),
        (np.ones((3, 2)), 0, "random", "lower k"),
        (np.ones(6), 1, "random", "2-D"),
        (np.array([[1.0, np.nan], [1.0, 0.0]]), 1, "random", "NaN"),
        (np.ones((3, 2)), 2, "greedy", "unknown init"),
    ],
)
def test_bad_input_is_rejected(x: np.ndarray, k: int, init: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        spherical_kmeans(x, k, init=init)


@pytest.mark.skipif(faiss_gpu_available(), reason="a faiss GPU is present")
def test_forcing_a_missing_gpu_fails_clearly() -> None:
    with pytest.raises(RuntimeError, match="use_gpu"):
        spherical_kmeans(np.eye(3), 2, use_gpu=True)


# Four directions in two tight pairs: 0/10 degrees and 90/100 degrees, two points each.
# Points coincide after normalisation, so tests on it seed with k-means++ (see above).
PAIRED = _directions([0, 0, 10, 10, 90, 90, 100, 100], [1, 2, 3, 1, 1, 5, 2, 1])
FINE_TRUTH = np.array([0, 0, 1, 1, 2, 2, 3, 3])
COARSE_TRUTH = np.array([0, 0, 0, 0, 1, 1, 1, 1])


def test_independent_levels_keep_the_order_of_ks() -> None:
    coarse, fine = multi_level_kmeans(PAIRED, [2, 4], niter=10, init="kmeans++")
    assert coarse.centroids.shape == (2, 2) and fine.centroids.shape == (4, 2)
    assert _same_partition(coarse.assignments, COARSE_TRUTH)
    assert _same_partition(fine.assignments, FINE_TRUTH)


def test_hierarchical_levels_nest_and_use_point_means() -> None:
    coarse, fine = multi_level_kmeans(PAIRED, [2, 4], hierarchical=True, niter=10, init="kmeans++")
    assert _same_partition(fine.assignments, FINE_TRUTH)
    assert _same_partition(coarse.assignments, COARSE_TRUTH)
    # Coarse centroids: normalised mean of the member points, at 5 and 95 degrees.
    np.testing.assert_allclose(
        coarse.centroids[coarse.assignments], _directions([5] * 4 + [95] * 4, [1] * 8), atol=1e-6
    )
    assert coarse.inertia == pytest.approx(8 * (2 - 2 * np.cos(np.deg2rad(5))), rel=1e-4)


def test_hierarchical_labels_nest_on_random_data() -> None:
    x = np.random.default_rng(1).standard_normal((200, 8))
    levels = multi_level_kmeans(x, [3, 20, 7], hierarchical=True, niter=5)
    assert [len(level.centroids) for level in levels] == [3, 20, 7]
    for fine, coarse in [(levels[1], levels[2]), (levels[2], levels[0])]:
        parents = {(f, c) for f, c in zip(fine.assignments, coarse.assignments)}
        assert len(parents) == len({f for f, _ in parents})  # one parent per fine cluster


def test_duplicate_ks_are_rejected() -> None:
    with pytest.raises(ValueError, match="distinct"):
        multi_level_kmeans(PAIRED, [2, 2])
