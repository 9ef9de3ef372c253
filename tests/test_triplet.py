"""Triplet losses on hand-made similarity matrices with hand-computed values."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from ifnd.falseneg.triplet import (
    bidirectional_triplet_loss,
    hardest_negative_indices,
    triplet_from_indices,
)

# Rows are anchors, columns candidates; float64 so that hand-computed values are exact enough.
SIMS = torch.tensor([[0.9, 0.5, 0.8], [0.1, 0.7, 0.6]], dtype=torch.float64)
POS = torch.tensor([0.9, 0.7], dtype=torch.float64)


def test_triplet_single_negative_hinge():
    # row 0: 0.2 + 0.5 - 0.9 = -0.2 -> 0;  row 1: 0.2 + 0.6 - 0.7 = 0.1
    loss = triplet_from_indices(SIMS, POS, torch.tensor([[1], [2]]), margin=0.2)
    assert_close(loss, torch.tensor([0.0, 0.1], dtype=torch.float64))


def test_triplet_sums_over_k_negatives_and_uses_margin():
    # row 0: [0.2+0.5-0.9]_+ + [0.2+0.8-0.9]_+ = 0 + 0.1;  row 1: [0.2+0.1-0.7]_+ + 0.1 = 0.1
    loss = triplet_from_indices(SIMS, POS, torch.tensor([[1, 2], [0, 2]]), margin=0.2)
    assert_close(loss, torch.tensor([0.1, 0.1], dtype=torch.float64))
    # margin 0.5: row 0: 0.1 + 0.4 = 0.5; row 1: 0 + 0.4 = 0.4
    loss = triplet_from_indices(SIMS, POS, torch.tensor([[1, 2], [0, 2]]), margin=0.5)
    assert_close(loss, torch.tensor([0.5, 0.4], dtype=torch.float64))


def test_triplet_gradient_reaches_only_violating_entries():
    sims = SIMS.clone().requires_grad_(True)
    pos = sims.diagonal().clone()  # anchor i's positive is column i: 0.9 and 0.7
    triplet_from_indices(sims, pos, torch.tensor([[1], [2]])).sum().backward()
    # Row 0 does not violate the margin: no gradient. Row 1: +1 on its negative, -1 on its positive.
    expected = torch.tensor([[0.0, 0.0, 0.0], [0.0, -1.0, 1.0]], dtype=torch.float64)
    assert_close(sims.grad, expected)


def test_hardest_negative_skips_known_positives():
    eye = torch.tensor([[True, False, False], [False, True, False]])
    assert hardest_negative_indices(SIMS, eye).tolist() == [[2], [2]]
    # Anchor 0 also knows column 2 as a positive (another caption of its image).
    mask = torch.tensor([[True, False, True], [False, True, False]])
    assert hardest_negative_indices(SIMS, mask).tolist() == [[1], [2]]
    assert hardest_negative_indices(SIMS, eye, k=2).tolist() == [[2, 1], [2, 0]]


def test_hardest_negative_needs_enough_non_positives():
    mask = torch.tensor([[True, True, True], [False, True, False]])
    with pytest.raises(ValueError, match="non-positive"):
        hardest_negative_indices(SIMS, mask)


def test_bidirectional_loss_divides_by_batch():
    loss = bidirectional_triplet_loss(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 0.0]))
    assert loss.dim() == 0
    assert loss.item() == pytest.approx(3.0)
    with pytest.raises(ValueError):
        bidirectional_triplet_loss(torch.tensor([1.0, 2.0]), torch.tensor([3.0]))


def test_vsepp_through_the_shared_path_matches_hand_value():
    # In-batch image-text similarities; pair i is sim[i, i].
    sim = torch.tensor([[0.8, 0.7, 0.1], [0.3, 0.6, 0.5], [0.2, 0.9, 0.4]], dtype=torch.float64)
    eye = torch.eye(3, dtype=torch.bool)
    pos = sim.diagonal()
    i2t = triplet_from_indices(sim, pos, hardest_negative_indices(sim, eye))
    t2i = triplet_from_indices(sim.T, pos, hardest_negative_indices(sim.T, eye))
    # i2t hardest: 0.7, 0.5, 0.9 -> [0.2+0.7-0.8, 0.2+0.5-0.6, 0.2+0.9-0.4] = [0.1, 0.1, 0.7]
    # t2i hardest: columns' max off-diagonal 0.3, 0.9, 0.5 -> [0, 0.5, 0.3]
    assert_close(i2t, torch.tensor([0.1, 0.1, 0.7], dtype=torch.float64))
    assert_close(t2i, torch.tensor([0.0, 0.5, 0.3], dtype=torch.float64))
    assert bidirectional_triplet_loss(i2t, t2i).item() == pytest.approx(1.7 / 3)
