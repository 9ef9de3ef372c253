from __future__ import annotations

import pytest
import torch

from ifnd.falseneg.masks import any_level, false_negative_mask

T, F = True, False

# Two levels over six samples; -1 = no accepted pseudo-label.
LABELS = torch.tensor([
    [0, -1, 1, 1, -1, 0],
    [2, -1, 2, 3, 3, 2],
])
ANCHORS = torch.tensor([0, 2, 4])
# Candidate slots: samples 1 and 0, an empty slot, samples 3, 4 and 5. The empty slot
# (-1) must not be read as the last sample (5), whose level-1 label 2 equals the label
# of anchors 0 and 2.
CANDIDATES = torch.tensor([1, 0, -1, 3, 4, 5])

EXPECTED = torch.tensor([
    [  # level 0
        [F, F, F, F, F, T],  # anchor 0 (label 0): sample 0 itself is excluded
        [F, F, F, T, F, F],  # anchor 2 (label 1)
        [F, F, F, F, F, F],  # anchor 4 (unaccepted): never matches, not even sample 1 (-1)
    ],
    [  # level 1
        [F, F, F, F, F, T],  # anchor 0 (label 2)
        [F, T, F, F, F, T],  # anchor 2 (label 2)
        [F, F, F, T, F, F],  # anchor 4 (label 3): sample 4 itself is excluded
    ],
])


def test_false_negative_mask_per_level() -> None:
    mask = false_negative_mask(ANCHORS, CANDIDATES, LABELS)
    assert mask.dtype == torch.bool
    assert torch.equal(mask, EXPECTED)


def test_any_level_is_the_union() -> None:
    expected = torch.tensor([
        [F, F, F, F, F, T],
        [F, T, F, T, F, T],
        [F, F, F, T, F, F],
    ])
    assert torch.equal(any_level(false_negative_mask(ANCHORS, CANDIDATES, LABELS)), expected)


def test_a_sample_queued_twice_is_flagged_in_both_slots() -> None:
    mask = false_negative_mask(torch.tensor([2]), torch.tensor([3, 0, 3]), LABELS[:1])
    assert mask.tolist() == [[[T, F, T]]]


def test_labels_must_be_a_table() -> None:
    with pytest.raises(ValueError, match=r"\[L, N\]"):
        false_negative_mask(ANCHORS, CANDIDATES, LABELS[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_mask_follows_the_label_table_to_the_gpu() -> None:
    mask = false_negative_mask(ANCHORS, CANDIDATES, LABELS.cuda())
    assert mask.is_cuda
    assert torch.equal(mask.cpu(), EXPECTED)
