from __future__ import annotations

import math

import pytest
import torch

from ifnd.falseneg.acceptance import (
    accept_most_confident,
    accepted_share,
    centroid_confidence,
    margin_confidence,
    softmax_confidence,
)

E = math.e


def test_softmax_confidence_of_assigned_centroid() -> None:
    features = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
    centroids = torch.tensor([[3.0, 0.0], [0.0, 1.0]])  # normalised inside
    assignments = torch.tensor([0, 0, 1])
    confidence = softmax_confidence(features, centroids, assignments, temperature=0.5)
    expected = torch.tensor([E**2 / (E**2 + 1), 1 / (1 + E**2), 1 / (E**2 + 1)])
    assert confidence.dtype == torch.float32
    torch.testing.assert_close(confidence, expected)


def test_softmax_confidence_is_the_same_in_chunks() -> None:
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(7, 4, generator=generator, dtype=torch.float64)
    centroids = torch.randn(3, 4, generator=generator)
    assignments = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    whole = softmax_confidence(features, centroids, assignments, 0.1)
    one_row_at_a_time = softmax_confidence(features, centroids, assignments, 0.1, chunk_elements=3)
    torch.testing.assert_close(one_row_at_a_time, whole)
    assert bool(((whole > 0) & (whole < 1)).all())


def test_softmax_confidence_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="temperature"):
        softmax_confidence(torch.eye(2), torch.eye(2), torch.tensor([0, 1]), 0.0)
    with pytest.raises(ValueError, match="assignments"):
        softmax_confidence(torch.eye(2), torch.eye(2), torch.tensor([0]), 0.1)
    with pytest.raises(ValueError, match="same D"):
        softmax_confidence(torch.eye(2), torch.eye(3), torch.tensor([0, 1]), 0.1)


def test_margin_between_two_nearest_centroids() -> None:
    features = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, -1.0]])
    centroids = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    # Cosines: [1, 0, -1], [.71, .71, -.71], [0, -1, 0].
    nearest = torch.tensor([0, 0, 0])
    expected = torch.tensor([1.0, 0.0, 0.0])
    torch.testing.assert_close(margin_confidence(features, centroids, nearest), expected)
    torch.testing.assert_close(margin_confidence(features, centroids, nearest, chunk_elements=1), expected)


def test_margin_scores_the_assigned_centroid_not_the_nearest() -> None:
    # nested levels: a sample's coarse cluster is its fine cluster's parent, not always the nearest coarse centroid
    features = torch.tensor([[2.0, 0.0], [0.0, -1.0]])
    centroids = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    torch.testing.assert_close(margin_confidence(features, centroids, torch.tensor([1, 2])), torch.tensor([-1.0, 0.0]))
    torch.testing.assert_close(centroid_confidence(features, centroids, torch.tensor([1, 0])), torch.tensor([0.0, 0.0]))
    torch.testing.assert_close(centroid_confidence(features, centroids, torch.tensor([0, 2])), torch.tensor([1.0, 0.0]))


def test_margin_needs_two_centroids() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        margin_confidence(torch.eye(2), torch.ones(1, 2), torch.tensor([0, 0]))


@pytest.mark.parametrize(
    ("epoch", "schedule", "expected"),
    [
        (5, "linear", 0.2),  # before the first round: clamped
        (10, "linear", 0.2),
        (15, "linear", 0.6),
        (20, "linear", 1.0),
        (30, "linear", 1.0),  # after the last epoch: clamped
        (14, "step", 0.2),
        (15, "step", 1.0),  # from the midpoint on
        (30, "constant", 0.2),
    ],
)
def test_accepted_share_schedules(epoch: int, schedule: str, expected: float) -> None:
    share = accepted_share(epoch, 10, 20, start=0.2, end=1.0, schedule=schedule)
    assert share == pytest.approx(expected)


def test_accepted_share_when_first_and_last_epoch_coincide() -> None:
    assert accepted_share(4, 5, 5, 0.3, 0.9) == 0.3
    assert accepted_share(5, 5, 5, 0.3, 0.9) == 0.9


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(start=1.5, end=1.0), "start and end"),
        (dict(start=0.2, end=-0.1), "start and end"),
        (dict(start=0.2, end=1.0, schedule="cosine"), "unknown schedule"),
        (dict(start=0.2, end=1.0, last_epoch=5), "last_epoch"),
    ],
)
def test_accepted_share_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    arguments = dict(epoch=0, first_epoch=10, last_epoch=20) | kwargs
    with pytest.raises(ValueError, match=message):
        accepted_share(**arguments)


@pytest.mark.parametrize(
    ("share", "expected"),
    [
        (0.6, [3, -1, 4, -1, 5]),  # 3 accepted; the 0.5 tie goes to the lower index (2)
        (0.5, [3, -1, -1, -1, 5]),  # round(2.5) = 2
        (0.0, [-1, -1, -1, -1, -1]),
        (1.0, [3, 1, 4, 1, 5]),
    ],
)
def test_accept_most_confident(share: float, expected: list[int]) -> None:
    assignments = torch.tensor([3, 1, 4, 1, 5])
    confidence = torch.tensor([0.9, 0.1, 0.5, 0.5, 0.7])
    labels = accept_most_confident(assignments, confidence, share)
    assert labels.dtype == torch.long
    assert labels.tolist() == expected


def test_accept_per_cluster_takes_the_same_share_of_every_cluster() -> None:
    # cluster 7 is confident everywhere, cluster 2 nowhere: a global ranking would label only cluster 7
    assignments = torch.tensor([7, 7, 7, 7, 2, 2, 2, 2, -1])
    confidence = torch.tensor([0.9, 0.8, 0.95, 0.85, 0.1, 0.3, 0.2, 0.05, 0.99])
    assert accept_most_confident(assignments, confidence, 0.5).tolist() == [7, -1, 7, 7, -1, -1, -1, -1, -1]
    per = accept_most_confident(assignments, confidence, 0.5, per_cluster=True)
    assert per.tolist() == [7, -1, 7, -1, -1, 2, 2, -1, -1]  # the two most confident of each; -1 never accepted
    assert accept_most_confident(assignments, confidence, 1.0, per_cluster=True).tolist() == assignments.tolist()


def test_accept_most_confident_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="share"):
        accept_most_confident(torch.tensor([0, 1]), torch.tensor([0.5, 0.5]), 1.2)
    with pytest.raises(ValueError, match="both be"):
        accept_most_confident(torch.tensor([0, 1]), torch.tensor([0.5]), 0.5)
    with pytest.raises(ValueError, match="NaN"):
        accept_most_confident(torch.tensor([0, 1]), torch.tensor([0.5, math.nan]), 0.5)
