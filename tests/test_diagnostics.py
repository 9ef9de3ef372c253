from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ifnd.falseneg.diagnostics import (
    DetectionTally,
    PairTally,
    PairCounts,
    nmi,
    precision_at_recall,
    purity,
    similarity_ranking_curve,
    table_pair_counts,
    tally_pairs,
)


def test_pair_counts_add_and_ratios() -> None:
    total = PairCounts(detected=3, true_positive=1, actual=2) + PairCounts(1, 1, 2)
    assert total == PairCounts(4, 2, 4)
    assert total.precision == 0.5
    assert total.recall == 0.5


def test_empty_pair_counts_have_zero_ratios() -> None:
    assert PairCounts(0, 0, 0).precision == 0.0
    assert PairCounts(0, 0, 0).recall == 0.0


def test_tally_skips_self_pairs_and_empty_slots_per_view_and_class() -> None:
    anchor_ids = torch.tensor([0, 1])
    candidate_ids = torch.tensor([1, 0, -1, 5])
    anchor_classes = torch.tensor([7, 8]) - 6  # classes 1, 2 of 3
    candidate_classes = torch.tensor([8, 7, 7, 7]) - 6
    union = torch.tensor([
        [True, True, True, True],  # self pair (id 0) and empty slot are not counted
        [False, False, True, True],
    ])
    level0 = torch.tensor([[False, False, False, True], [False, False, False, False]])
    tally = tally_pairs(torch.stack([level0, union]), anchor_ids, candidate_ids, anchor_classes, candidate_classes, 3)
    # Counted pairs: (0,1) (0,5) (1,0) (1,5); only (0,5) shares a class (1). Union detects (0,1) (0,5) (1,5).
    assert int(tally.detected[1].sum()) == 3 and tally.precision() == pytest.approx(1 / 3) and tally.recall() == 1.0
    assert tally.precision(0) == 1.0 and tally.recall(0) == 1.0  # level 0 finds just (0, 5)
    assert tally.detected[1].tolist() == [[0, 0, 0], [0, 1, 1], [0, 1, 0]]  # (anchor class, candidate class)
    per_class = tally.per_class()
    assert per_class["precision"][1:] == pytest.approx([0.5, 0.0]) and per_class["recall"][1] == 1.0
    assert math.isnan(per_class["recall"][2]) and per_class["labelled"] == pytest.approx([0, 2 / 3, 1 / 3])
    assert (tally + tally).detected.sum() == 2 * tally.detected.sum()


def test_table_pair_counts_by_hand() -> None:
    pseudo_labels = np.array([0, 0, 0, 1, 1, -1, -1])
    classes = np.array([5, 5, 6, 6, 6, 5, 9])
    counts = table_pair_counts(pseudo_labels, classes)
    # detected: groups of 3 and 2 -> 3*2 + 2*1; true positives: (0, class 5) = {0, 1} and
    # (1, class 6) = {3, 4} -> 2 + 2; actual: classes {0, 1, 5}, {2, 3, 4}, {6} -> 6 + 6.
    assert counts == PairCounts(detected=8, true_positive=4, actual=12)


def test_table_pair_counts_match_brute_force() -> None:
    rng = np.random.default_rng(0)
    pseudo_labels = torch.from_numpy(rng.integers(-1, 4, size=40))
    classes = torch.from_numpy(rng.integers(0, 3, size=40) * 10)
    p, c = pseudo_labels[:, None], classes[:, None]
    other = ~torch.eye(40, dtype=torch.bool)
    detected = (p == p.T) & (p >= 0) & other
    same_class = (c == c.T) & other
    true_positive = detected & same_class
    expected = PairCounts(int(detected.sum()), int(true_positive.sum()), int(same_class.sum()))
    assert table_pair_counts(pseudo_labels, classes) == expected


def test_nmi_ignores_label_names() -> None:
    assert nmi(np.array([1, 1, 0, 0, 2]), np.array([5, 5, 3, 3, 4])) == pytest.approx(1.0)
    assert nmi(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, 1])) == pytest.approx(0.0)


def test_purity_counts_majority_class_per_cluster() -> None:
    # Cluster 0 holds classes [1, 1, 2] (majority 2), cluster 1 holds [2, 2] (majority 2).
    assert purity(np.array([0, 0, 0, 1, 1]), np.array([1, 1, 2, 2, 2])) == pytest.approx(0.8)


def test_similarity_ranking_curve_on_hand_made_points():
    # classes 0, 0, 1, 1; cosine similarities: b-d 0.96 (different classes), a-b and c-d 0.8 (same),
    # a-d and b-c 0.6, a-c 0
    features = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [0.6, 0.8]])
    classes = torch.tensor([0, 0, 1, 1])
    precision, recall = similarity_ranking_curve(features, classes)
    assert precision.shape == recall.shape == (12,)  # every ordered pair i != j
    assert recall[1] == 0 and precision[5] == pytest.approx(4 / 6) and recall[5] == 1  # b-d twice, then 4 hits
    assert precision[-1] == pytest.approx(4 / 12)
    assert precision_at_recall(precision, recall, 1.0) == pytest.approx(4 / 6)
    # each anchor flags its m nearest: m = 1 -> a:b (hit), b:d, c:d (hit), d:b; m = 2 -> every same-class pair
    precision, recall = similarity_ranking_curve(features, classes, per_anchor=True)
    assert precision.tolist() == pytest.approx([0.5, 0.5, 1 / 3]) and recall.tolist() == pytest.approx([0.5, 1, 1])
    assert precision_at_recall(precision, recall, 0.5) == pytest.approx(0.5)
    assert math.isnan(precision_at_recall(precision, recall * 0.5, 0.9))


def _bincount_tally(masks, anchor_ids, candidate_ids, anchor_classes, candidate_classes, num_classes):
    """The tally as it was computed before PairTally (a [V, C, C] bincount per batch, copied to the CPU)."""
    candidates = candidate_ids
    counted = (candidates >= 0).unsqueeze(0) & (anchor_ids.unsqueeze(1) != candidates.unsqueeze(0))
    a = anchor_classes.unsqueeze(1).expand_as(counted)
    c = candidate_classes.unsqueeze(0).expand_as(counted)
    pair_class = a * num_classes + c
    detected = torch.stack([torch.bincount(pair_class[m & counted], minlength=num_classes * num_classes)
                            for m in masks]).view(len(masks), num_classes, num_classes)
    return DetectionTally(detected, torch.bincount(a[counted & (a == c)], minlength=num_classes))


def test_device_tally_over_steps_equals_the_bincount_tally() -> None:
    gen = torch.Generator().manual_seed(0)
    classes = torch.randint(0, 5, (40,), generator=gen)
    tally, expected = PairTally(3, 5), None
    for _ in range(4):
        anchor_ids = torch.randperm(40, generator=gen)[:6]
        candidate_ids = torch.randint(-1, 40, (9,), generator=gen)  # -1: slots without a sample
        candidate_ids[0] = anchor_ids[0]  # a self pair
        masks = torch.rand(3, 6, 9, generator=gen) < 0.5
        args = (masks, anchor_ids, candidate_ids, classes[anchor_ids], classes[candidate_ids.clamp(min=0)])
        tally.add(*args)
        step = _bincount_tally(*args, 5)
        expected = step if expected is None else expected + step
    assert torch.equal(tally.reduced().detected, expected.detected)
    assert torch.equal(tally.reduced().actual, expected.actual)
    assert int(expected.detected.sum()) > 0 and int(expected.actual.sum()) > 0
