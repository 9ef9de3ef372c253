"""The fast paths of the FNE sampler and the memory that ITM training relies on.

The sampler computes the Gaussian log-odds as one quadratic, the weights in place, and
draws in two levels (blocks of candidates, then a candidate); these tests compare each
with the plain formula of the original FNE code (``choice_negative``) on wide rows (several blocks plus a remainder).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from ifnd.falseneg.bayes import SimilarityStats, false_negative_probability, sample_negatives, sampling_weights
from ifnd.models.ring_buffer import IdRingBuffer


def _stats(method: str = "gaussian") -> SimilarityStats:
    stats = SimilarityStats(min_positives=1, method=method, bins=20)
    gen = torch.Generator().manual_seed(0)
    stats.update(0.6 + 0.1 * torch.randn(300, generator=gen), 0.3 + 0.15 * torch.randn(600, generator=gen))
    return stats


def _reference_weights(sims, pos_sims, mask, stats, tau, prior, threshold, cut_down, cut_margin):
    """The original's choice_negative written out literally: kernel exp(-tau (s - s_pos)^2), and exp(-tau P_fn)
    for likely false negatives; P_fn = p_pos / (p_pos + (1/prior - 1) p_neg)."""
    log_pos, log_neg = stats.log_likelihoods(sims)
    pos_p, neg_p = log_pos.exp(), log_neg.exp()
    p_fn = pos_p / (pos_p + (1 / prior - 1) * neg_p)
    kernel = torch.exp(-(sims - pos_sims.unsqueeze(1)) ** 2 * tau)
    weights = torch.where(p_fn > threshold, torch.exp(-p_fn * tau), kernel)
    if cut_down:
        weights = torch.where(sims <= stats.pos_mean - cut_margin, torch.zeros_like(weights), weights)
    return weights.masked_fill(mask, 0.0), p_fn


@pytest.mark.parametrize("method", ["gaussian", "histogram"])
@pytest.mark.parametrize("cut_down", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_weights_and_posterior_match_the_literal_formulas(method, cut_down, dtype):
    gen = torch.Generator().manual_seed(1)
    sims = (torch.rand(16, 300, generator=gen, dtype=dtype) * 1.6 - 0.6)
    pos_sims = 0.5 + 0.3 * torch.rand(16, generator=gen, dtype=dtype)
    mask = torch.rand(16, 300, generator=gen) < 0.05
    stats = _stats(method)
    args = dict(tau=0.3, prior=0.05, cut_down=cut_down, cut_margin=0.2)
    weights, switched = sampling_weights(sims, pos_sims, mask, stats, fn_threshold=1e-3, **args)
    expected_w, expected_p = _reference_weights(sims, pos_sims, mask, stats, threshold=1e-3, **args)
    assert bool(((expected_p > 1e-3) & (expected_p < 0.999)).any())  # the replacement branch is exercised
    tol = dict(rtol=1e-4, atol=1e-6) if dtype == torch.float32 else {}
    assert torch.equal(switched, expected_p > 1e-3)
    assert_close(weights, expected_w, **tol)
    assert_close(false_negative_probability(sims, stats, 0.05), expected_p, **tol)


def test_two_level_draws_follow_the_weights_across_blocks_and_remainder():
    width = 300  # two blocks of 128 and a remainder of 44
    weights = torch.zeros(4, width)
    weights[0, [0, 127, 128, 299]] = torch.tensor([1.0, 2.0, 3.0, 4.0])  # block edges and the last column
    weights[1, 299] = 5.0  # only the last column of the remainder
    weights[2, 0] = 0.5  # only the first column
    weights[3] = torch.rand(width, generator=torch.Generator().manual_seed(2))
    sims = torch.rand(4, width)
    no_pos = torch.zeros(4, width, dtype=torch.bool)
    idx, drawn = sample_negatives(sims, weights, no_pos, num_samples=20000, generator=torch.Generator().manual_seed(3))
    assert bool((drawn > 0).all()) and bool((idx >= 0).all() and (idx < width).all())
    freq = torch.bincount(idx[0], minlength=width).double() / idx.shape[1]
    assert set(torch.nonzero(freq).flatten().tolist()) == {0, 127, 128, 299}
    assert_close(freq[[0, 127, 128, 299]], torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64), atol=0.015, rtol=0)
    assert set(idx[1].tolist()) == {299} and set(idx[2].tolist()) == {0}
    freq = torch.bincount(idx[3], minlength=width).double() / idx.shape[1]
    assert (freq - weights[3].double() / weights[3].sum()).abs().max() < 0.005


def test_single_draw_per_row_respects_zero_weights_and_fallback_on_wide_rows():
    gen = torch.Generator().manual_seed(4)
    weights = torch.rand(64, 1000, generator=gen) * (torch.rand(64, 1000, generator=gen) < 0.02)
    weights[5] = 0.0  # falls back to its hardest non-positive
    sims = torch.rand(64, 1000, generator=gen)
    mask = torch.zeros(64, 1000, dtype=torch.bool)
    mask[5, sims[5].argmax()] = True
    for seed in range(20):
        idx, drawn = sample_negatives(sims, weights, mask, generator=torch.Generator().manual_seed(seed))
        keep = torch.arange(64) != 5
        assert bool((weights[keep].gather(1, idx[keep]) > 0).all())
        assert idx[5, 0] == sims[5].masked_fill(mask[5], -1).argmax() and drawn[5, 0] == 0


def test_memory_contents_are_the_filled_prefix_before_and_after_wrapping():
    memory = IdRingBuffer.pairs(5, 1)
    assert memory.contents()[2].numel() == 0
    memory.enqueue(torch.ones(3, 1), torch.ones(3, 1), torch.tensor([7, 8, 9]))
    assert memory.contents()[2].tolist() == [7, 8, 9]
    memory.enqueue(2 * torch.ones(3, 1), 2 * torch.ones(3, 1), torch.tensor([1, 2, 3]))  # wraps: slots 3, 4, 0
    image, _, ids = memory.contents()
    assert ids.tolist() == [3, 8, 9, 1, 2] and image.flatten().tolist() == [2, 1, 1, 2, 2]
    assert memory.positive_mask(torch.tensor([8, 3])).tolist() == [
        [False, True, False, False, False], [True, False, False, False, False]]


def test_fne_monitor_sums_by_hand():
    from ifnd.falseneg.bayes import SampledNegatives
    from ifnd.itm.fne_monitor import FNEMonitor

    monitor = FNEMonitor()
    weights = torch.tensor([[0.0, 0.2, 0.6, 1.0]])
    switched = torch.tensor([[True, True, False, False]])
    positive = torch.tensor([[True, False, False, False]])
    same_class = torch.tensor([[True, True, False, False]])  # candidate 1: a true false negative
    draws = SampledNegatives(torch.tensor([[2]]), weights[:, 2:3], weights, switched)
    monitor.observe(draws, positive, True, same_class)
    monitor.observe(draws, positive, False, same_class)
    stats = SimilarityStats(min_positives=1)
    stats.update(torch.tensor([0.6, 0.8]), torch.tensor([0.1, 0.3]))
    record = monitor.record(stats)
    assert record["fne/calls"] == 2 and record["fne/ready_share"] == 0.5
    assert record["fne/above_switch_share"] == pytest.approx(1 / 3)  # candidate 1 of the 3 negatives
    assert record["fne/weight_true_fn"] == pytest.approx(0.2) and record["fne/weight_true_neg"] == pytest.approx(0.8)
    assert record["fne/pos_mean"] == pytest.approx(0.7) and record["fne/neg_std"] == pytest.approx(math.sqrt(0.02))
    monitor.reset()
    assert math.isnan(monitor.record(stats)["fne/ready_share"])
