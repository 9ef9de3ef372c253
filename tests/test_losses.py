import math

import pytest
import torch
import torch.nn.functional as F
from lightly.loss import NTXentLoss

from ifnd.losses import info_nce, level_masks, masked_info_nce, moco_layout, simclr_layout


def test_simclr_layout_without_masks_equals_lightly_ntxent():
    torch.manual_seed(0)
    z1, z2 = F.normalize(torch.randn(6, 8), dim=1), F.normalize(torch.randn(6, 8), dim=1)
    logits, pos, excl, ids2 = simclr_layout(z1, z2, torch.arange(6), temperature=0.5)
    ours = masked_info_nce(logits, pos, None, excl)
    theirs = NTXentLoss(temperature=0.5)(z1, z2)
    assert torch.allclose(ours, theirs, atol=1e-6)
    assert ids2.tolist() == list(range(6)) * 2


def test_elimination_removes_false_negative_from_denominator():
    # one anchor, candidates: [positive, fn, negative]
    logits = torch.tensor([[2.0, 1.0, 0.5]])
    pos = torch.tensor([[True, False, False]])
    fn = torch.tensor([[False, True, False]])
    loss = masked_info_nce(logits, pos, fn, mode="elimination")
    expected = -(2.0 - math.log(math.exp(2.0) + math.exp(0.5)))
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_attraction_averages_over_positives():
    logits = torch.tensor([[2.0, 1.0, 0.5]])
    pos = torch.tensor([[True, False, False]])
    fn = torch.tensor([[False, True, False]])
    loss = masked_info_nce(logits, pos, fn, mode="attraction")
    lse = math.log(math.exp(2.0) + math.exp(1.0) + math.exp(0.5))
    expected = -((2.0 - lse) + (1.0 - lse)) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_false_negative_flag_on_the_positive_is_ignored_and_excluded_columns_vanish():
    logits = torch.tensor([[9.0, 2.0, 0.5]])
    pos = torch.tensor([[False, True, False]])
    excl = torch.tensor([[True, False, False]])
    fn = torch.tensor([[False, True, False]])  # flagged positive stays the positive
    loss = masked_info_nce(logits, pos, fn, excl)
    expected = -(2.0 - math.log(math.exp(2.0) + math.exp(0.5)))
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_gradients_are_finite_with_masks():
    logits = torch.randn(4, 5, requires_grad=True)
    pos = torch.zeros(4, 5, dtype=torch.bool)
    pos[:, 0] = True
    excl = torch.zeros_like(pos)
    excl[:, 4] = True
    fn = torch.zeros_like(pos)
    fn[:, 2] = True
    masked_info_nce(logits, pos, fn, excl).backward()
    assert torch.isfinite(logits.grad).all()
    assert (logits.grad[:, 2] == 0).all() and (logits.grad[:, 4] == 0).all()


def test_moco_layout_puts_the_key_first():
    q = F.normalize(torch.randn(3, 4), dim=1)
    k = F.normalize(torch.randn(3, 4), dim=1)
    queue = F.normalize(torch.randn(5, 4), dim=1)
    logits, pos = moco_layout(q, k, queue, temperature=0.2)
    assert logits.shape == (3, 6)
    assert torch.allclose(logits[:, 0], (q * k).sum(1) / 0.2)
    assert torch.allclose(logits[:, 1:], q @ queue.T / 0.2)
    assert pos[:, 0].all() and not pos[:, 1:].any()


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="mode"):
        masked_info_nce(torch.zeros(1, 2), torch.tensor([[True, False]]), mode="other")


@pytest.mark.parametrize("mode", ["elimination", "attraction"])
def test_level_masks_average_the_per_level_losses(mode):
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0], [0.0, 1.5, 0.3, 0.2]])
    pos = torch.tensor([[True, False, False, False], [False, True, False, False]])
    levels = torch.tensor([[[False, True, False, False], [False, False, False, False]],   # level 0
                           [[False, True, True, False], [True, False, False, True]]])    # level 1
    excl = torch.tensor([[False, False, False, True], [False, False, False, False]])
    per_level = [masked_info_nce(logits, pos, m, excl, mode) for m in levels]
    assert per_level[0] != per_level[1]
    assert info_nce(logits, level_masks(pos, levels, excl, mode)).item() == pytest.approx(
        (per_level[0] + per_level[1]).item() / 2, abs=1e-6)
    union = masked_info_nce(logits, pos, levels.any(0), excl, mode)
    assert info_nce(logits, level_masks(pos, levels, excl, mode, combine="union")).item() == pytest.approx(union.item(), abs=1e-6)


def test_a_detected_logit_far_above_the_kept_ones_leaves_the_loss_exact():
    # the row's largest logit (the shift) is detected and 60 above the kept ones
    logits = torch.tensor([[1.0, 61.0, 0.5, -0.5]], dtype=torch.float64)
    pos = torch.tensor([[True, False, False, False]])
    fn = torch.tensor([[False, True, False, False]])
    expected = -(1.0 - math.log(math.exp(1.0) + math.exp(0.5) + math.exp(-0.5)))
    assert masked_info_nce(logits.float(), pos, fn).item() == pytest.approx(expected, rel=1e-5)


def test_bfloat16_logits_are_summed_in_float32():
    torch.manual_seed(0)
    logits = torch.randn(8, 300) * 5
    pos = torch.zeros(8, 300, dtype=torch.bool)
    pos[:, 0] = True
    loss = masked_info_nce(logits.bfloat16(), pos)
    assert loss.dtype == torch.float32
    assert loss.item() == masked_info_nce(logits.bfloat16().float(), pos).item()


def test_a_minus_infinity_logit_removes_its_candidate_without_nan():
    logits = torch.tensor([[2.0, float("-inf"), 0.5]], requires_grad=True)
    pos = torch.tensor([[True, False, False]])
    loss = masked_info_nce(logits, pos)
    loss.backward()
    assert loss.item() == pytest.approx(-(2.0 - math.log(math.exp(2.0) + math.exp(0.5))), abs=1e-6)
    assert torch.isfinite(logits.grad).all() and logits.grad[0, 1] == 0
