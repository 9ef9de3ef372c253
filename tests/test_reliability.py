"""Label-free reliability signals and the precision estimator, on hand-made assignments and points."""

import math

import pytest
import torch
from scipy.stats import spearmanr

from ifnd.falseneg.precision_estimate import PrecisionEstimator, spearman
from ifnd.falseneg.reliability import (
    assignment_agreement, cluster_sizes, largest_share, margin_per_cluster, pair_agreement,
    pair_agreement_per_cluster, pair_weighted_mean, partner_closeness_per_cluster, restart_assignments,
    sample_cluster_partners, size_entropy)


def test_partners_are_other_members_of_the_same_cluster_drawn_uniformly():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, -1, 0])  # cluster 2 is a singleton, sample 6 unassigned
    seen = set()
    for seed in range(200):
        anchors, partners = sample_cluster_partners(labels, torch.Generator().manual_seed(seed))
        assert sorted(anchors.tolist()) == [0, 1, 2, 3, 4, 7]  # every member of a cluster of >= 2, once
        assert (labels[anchors] == labels[partners]).all() and (anchors != partners).all()
        seen |= set(zip(anchors.tolist(), partners.tolist()))
    assert {p for p in seen if p[0] == 0} == {(0, 1), (0, 2), (0, 7)}  # each other member of cluster 0 drawn


def test_pair_agreement_per_cluster_and_pair_weighted_level():
    reference = torch.tensor([0, 0, 0, 1, 1, -1, 2])
    other = torch.tensor([5, 5, 5, 2, 3, 2, 9])  # cluster 0 kept whole, cluster 1 split; cluster 2 a singleton
    per_cluster = pair_agreement_per_cluster(reference, other, 3)
    assert per_cluster[:2].tolist() == [1.0, 0.0] and math.isnan(per_cluster[2])
    # 6 ordered pairs in cluster 0 agree, 2 in cluster 1 do not
    assert pair_weighted_mean(per_cluster, cluster_sizes(reference, 3)) == pytest.approx(6 / 8)
    assert pair_agreement(reference, other) == pytest.approx(6 / 8)


def test_pair_agreement_ignores_cluster_names_and_counts_unassigned_as_disagreement():
    reference = torch.tensor([0, 0, 1, 1, 2, 2])
    assert pair_agreement(reference, torch.tensor([7, 7, 3, 3, 0, 0])) == 1.0  # the same partition, renamed
    assert pair_agreement(reference, torch.tensor([7, 7, -1, -1, 0, 0])) == pytest.approx(2 / 3)
    assert math.isnan(pair_agreement(torch.tensor([0, 1, -1]), torch.tensor([0, 0, 0])))  # no pair to check


def test_partner_closeness_is_one_half_for_chance_and_high_for_tight_clusters():
    blobs = torch.eye(8).repeat_interleave(20, dim=0)  # 8 orthogonal blobs of 20 identical points
    truth = torch.arange(8).repeat_interleave(20)
    g = torch.Generator().manual_seed(0)
    one = torch.where(truth == 0, 0, -1)  # one cluster, the rest unassigned: every draw ties
    assert partner_closeness_per_cluster(blobs, one, 1, g).tolist() == [0.5]
    tight = partner_closeness_per_cluster(blobs, truth, 8, g)  # a random sample shares the blob 1 time in 8
    assert (tight > 0.8).all()
    shuffled = truth[torch.randperm(len(truth), generator=g)]  # clusters that ignore the geometry
    assert pair_weighted_mean(partner_closeness_per_cluster(blobs, shuffled, 8, g), cluster_sizes(shuffled, 8)) \
        == pytest.approx(0.5, abs=0.1)


def test_assignment_agreement_over_samples_assigned_in_both():
    assert assignment_agreement(torch.tensor([0, 1, 2, -1]), torch.tensor([0, 1, 1, 0])) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="same N"):
        assignment_agreement(torch.tensor([0, 1]), torch.tensor([0]))


def test_cluster_size_signals():
    assert size_entropy(torch.tensor([0, 1, 2, 3]), 4) == pytest.approx(1.0)
    assert size_entropy(torch.tensor([1, 1, 1, -1]), 4) == 0.0
    assert size_entropy(torch.tensor([0, 0, 1, 1]), 4) == pytest.approx(0.5)  # log 2 / log 4
    assert largest_share(torch.tensor([0, 0, 0, 1, -1]), 2) == pytest.approx(0.75)


def test_margin_per_cluster_by_hand():
    centroids = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    features = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [5.0, 5.0]])
    labels = torch.tensor([0, 0, 1, -1])
    margin = margin_per_cluster(features, centroids, labels)
    # sample 0: 1 - 0; sample 1: cos 45deg to both = 0; sample 2: 1 - 0; cluster 2 empty
    assert margin[:2].tolist() == pytest.approx([0.5, 1.0]) and math.isnan(margin[2])


def test_restart_clusters_a_subsample_of_assigned_samples():
    features = torch.nn.functional.normalize(torch.randn(50, 4, generator=torch.Generator().manual_seed(0)), dim=1)
    labels = torch.arange(50) % 3
    labels[:5] = -1
    restart = restart_assignments(features, labels, 3, 4, 5, torch.Generator().manual_seed(1))
    drawn = restart >= 0
    assert int(drawn.sum()) == 12 and not drawn[:5].any() and int(restart.max()) <= 2


def test_estimator_predicts_a_logistic_and_fits_one_back(tmp_path):
    estimator = PrecisionEstimator(("stability", "margin"), (2.0, -1.0), 0.5)
    assert float(estimator.predict({"stability": 0.0, "margin": 0.5})) == pytest.approx(0.5)
    assert estimator.predict({"stability": torch.tensor([0.2, 0.8]), "margin": 0.0}).diff().item() > 0
    with pytest.raises(KeyError, match="margin"):
        estimator.predict({"stability": 1.0})
    s = torch.linspace(0, 1, 40)
    fitted = PrecisionEstimator.fit({"stability": s}, torch.sigmoid(3.0 * s - 2.0))
    assert fitted.weights[0] == pytest.approx(3.0, abs=0.05) and fitted.intercept == pytest.approx(-2.0, abs=0.05)
    fitted.save(tmp_path / "est.yaml")
    assert PrecisionEstimator.load(tmp_path / "est.yaml") == fitted
    with pytest.raises(FileNotFoundError, match="calibrate_reliability"):
        PrecisionEstimator.load(tmp_path / "missing.yaml")


def test_spearman_matches_scipy_with_ties_and_skips_nan():
    a = torch.tensor([1.0, 2.0, 2.0, 5.0, 3.0, float("nan")])
    b = torch.tensor([0.1, 0.3, 0.2, 0.9, 0.9, 0.5])
    assert spearman(a, b) == pytest.approx(spearmanr(a[:5].numpy(), b[:5].numpy()).statistic)
    assert spearman(torch.arange(5.0), -torch.arange(5.0)) == pytest.approx(-1.0)
    assert math.isnan(spearman(torch.ones(4), torch.arange(4.0)))
