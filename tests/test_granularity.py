"""Choosing k without labels: the cosine silhouette, the search over candidates, and the detector that uses them."""

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import silhouette_score

from ifnd.config import ConfigError, resolve
from ifnd.falseneg.clustering import spherical_kmeans
from ifnd.falseneg.detectors import build_detector
from ifnd.falseneg.granularity import (
    choose_k, cosine_silhouette, levels_for, round_sample, sample_rows, usable_candidates)


def blobs(k: int, per: int = 20, dim: int = 16, noise: float = 0.1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features [k * per, dim] L2-normalised, blob of each row [k * per])``: k tight blobs on the sphere."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(k, dim, generator=g), dim=1)
    blob = torch.arange(k).repeat_interleave(per)
    return F.normalize(centres[blob] + noise * torch.randn(len(blob), dim, generator=g), dim=1), blob


def test_cosine_silhouette_is_scikit_learns_with_a_point_alone_in_its_cluster():
    x, _ = blobs(4, per=6)
    assignments = torch.tensor([0] * 5 + [3] + [1] * 6 + [2] * 6 + [4] * 6)  # cluster 3 holds one point
    expected = silhouette_score(x.double().numpy(), assignments.numpy(), metric="cosine")
    assert cosine_silhouette(x, assignments) == pytest.approx(expected, abs=1e-9)
    random = torch.randint(0, 5, (len(x),), generator=torch.Generator().manual_seed(1))
    assert cosine_silhouette(x, random) == pytest.approx(silhouette_score(x.double().numpy(), random.numpy(), metric="cosine"), abs=1e-9)


def test_cosine_silhouette_on_two_hand_made_clusters():
    # two orthogonal pairs of identical points: a = 0, b = 1 for every point -> silhouette 1
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert cosine_silhouette(x, torch.tensor([0, 0, 1, 1])) == pytest.approx(1.0)
    # each cluster holds one point of each pair: a = 1 (its partner is orthogonal), b = (0 + 1) / 2 -> -0.5
    assert cosine_silhouette(x, torch.tensor([0, 1, 0, 1])) == pytest.approx(-0.5)
    with pytest.raises(ValueError, match="two clusters"):
        cosine_silhouette(x, torch.zeros(4, dtype=torch.long))


def kmeans(sample: torch.Tensor, ks: list[int]) -> list[torch.Tensor]:
    return [torch.from_numpy(spherical_kmeans(sample.numpy(), k, nredo=5, seed=0).assignments) for k in ks]


def test_choose_k_finds_the_number_of_blobs():
    x, _ = blobs(8, per=30)
    k, scores = choose_k(x, [4, 8, 16], kmeans)
    assert k == 8 and scores[8] > scores[4] and scores[8] > scores[16]


def test_choose_k_stops_after_two_candidates_below_the_best():
    x, blob = blobs(4, per=30)
    tried = []

    def hand_made(sample: torch.Tensor, ks: list[int]) -> list[torch.Tensor]:
        """k = 3 returns the 4 blobs, k = 2 pairs of blobs, any other k a scrambled split."""
        (k,) = ks
        tried.append(k)
        return [blob if k == 3 else blob // 2 if k == 2 else (blob * 7 + torch.arange(len(blob))) % k]

    k, scores = choose_k(x, [3, 2, 4, 5, 6, 8], hand_made)
    assert k == 3 and tried == [2, 3, 4, 5] and set(scores) == {2, 3, 4, 5}  # smallest first; 4, 5 below 3: stop


def test_choose_k_skips_ks_too_large_for_the_sample():
    x, _ = blobs(4, per=10)  # 40 rows: k = 8 would leave 5 per cluster, below the 10 needed
    assert usable_candidates([2, 4, 8], len(x)) == [2, 4]
    assert choose_k(x, [4, 8], kmeans)[1].keys() == {4}
    with pytest.raises(ValueError, match="sample points per cluster"):
        choose_k(x, [8, 16], kmeans)


def test_the_levels_of_a_chosen_k_are_it_and_twice_it():
    assert levels_for(20) == (20, 40) and levels_for(5) == (5, 10)


def test_round_sample_draws_distinct_rows_reproducibly():
    x = torch.arange(50.0).view(25, 2)
    a, b = round_sample(x, 10, seed=3, sharded=False), round_sample(x, 10, seed=3, sharded=False)
    assert a.shape == (10, 2) and torch.equal(a, b) and len(set(a[:, 0].tolist())) == 10
    assert round_sample(x, 100, seed=0, sharded=False).shape == (25, 2)  # every row when there are fewer


def chosen_detector(**detection) -> torch.nn.Module:
    cfg = resolve({"train": {"epochs": 10}, "detection": {"mode": "ifnd", "choose_k": "silhouette", "warmup_epochs": 1,
                                                          "kmeans_nredo": 5, "k_candidates": [4, 8, 16], **detection}})
    return build_detector(cfg, 240, 16, None)


def test_a_detector_that_chooses_k_clusters_at_it_and_twice_it_and_reports_the_choice():
    x, blob = blobs(8, per=30)
    detector = chosen_detector()
    assert detector.levels == 2
    report = detector.run_round(1, x)
    assert report["chosen_k"] == 8.0 and 0.5 < report["chosen_k/silhouette"] <= 1.0
    assert len(detector.centroids[0]) == 8 and len(detector.centroids[1]) == 16
    level8 = detector.labels[0]
    assert all(len(set(level8[blob == b].tolist())) == 1 for b in range(8))  # the blobs, each one cluster


def test_choose_k_settings_that_cannot_work_are_refused():
    with pytest.raises(ConfigError, match="detection.k_candidates.*k >= 2"):
        resolve({"detection": {"mode": "ifnd", "choose_k": "silhouette", "k_candidates": [1, 6]}})
    with pytest.raises(ConfigError, match="raise detection.k_sample"):
        chosen_detector(k_candidates=[64, 128])  # 240 rows hold fewer than 10 per cluster


def _sharded_round(x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """A chosen-k round of the torch backend on this rank's rows (every world-th): the table and the chosen k."""
    from ifnd.runtime import distributed as dist

    detector = chosen_detector(kmeans_backend="torch")
    ids = torch.arange(dist.rank(), len(x), dist.world_size())
    report = detector.run_round(1, x[ids], ids)
    return detector.labels, report["chosen_k"]


@pytest.mark.slow
@pytest.mark.distributed
def test_two_gloo_processes_choose_the_same_k_and_table():
    from ifnd.runtime.spawn import run_ranks

    x, _ = blobs(8, per=30)
    (table0, k0), (table1, k1) = run_ranks(_sharded_round, 2, x)
    assert k0 == k1 == 8.0 and torch.equal(table0, table1)


def test_round_sample_in_one_process_takes_the_rows_of_sample_rows():
    x = torch.arange(60.0).view(30, 2)
    assert torch.equal(round_sample(x, 12, seed=5, sharded=False), x[sample_rows(30, 12, 5)])
