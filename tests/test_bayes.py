"""FNE sampler: statistics, Bayes posterior, weights, draws and the sampler object."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from ifnd.falseneg.bayes import (
    FNESampler,
    SimilarityStats,
    false_negative_probability,
    sample_negatives,
    sampling_weights,
    select_reliable_pairs,
)

F64 = torch.float64


def _stats(**kwargs) -> SimilarityStats:
    """Positives {0.7, 0.9} (mean 0.8) and negatives {0.1, 0.3} (mean 0.2), both variance 0.02."""
    stats = SimilarityStats(min_positives=2, **kwargs)
    stats.update(torch.tensor([0.7, 0.9], dtype=F64), torch.tensor([0.1, 0.3], dtype=F64))
    return stats


# --- SimilarityStats -----------------------------------------------------------------


def test_exact_statistics_match_torch_mean_and_var():
    pos = [torch.tensor([0.61, 0.83, 0.72]), torch.tensor([0.95]), torch.tensor([0.55, 0.8])]
    neg = [torch.tensor([0.12, -0.3]), torch.tensor([]), torch.tensor([0.4, 0.05, 0.33])]
    stats = SimilarityStats()
    for p, n in zip(pos, neg):
        stats.update(p, n)
    all_pos, all_neg = torch.cat(pos).double(), torch.cat(neg).double()
    assert stats.pos_mean == pytest.approx(all_pos.mean().item())
    assert stats.pos_var == pytest.approx(all_pos.var().item())
    assert stats.neg_mean == pytest.approx(all_neg.mean().item())
    assert stats.neg_var == pytest.approx(all_neg.var().item())


def test_ready_after_min_positives_and_reset_clears():
    stats = SimilarityStats(min_positives=3)
    stats.update(torch.tensor([0.8, 0.9]), torch.tensor([0.1, 0.2, 0.3, 0.4]))
    assert not stats.ready  # negatives do not count
    stats.update(torch.tensor([0.7]), torch.tensor([]))
    assert stats.ready
    stats.reset()
    assert not stats.ready
    assert (stats.pos_mean, stats.pos_var, stats.neg_mean, stats.neg_var) == (0.0, 0.0, 0.0, 0.0)
    assert all(int(b.count_nonzero()) == 0 for b in stats.buffers())


def test_update_does_not_keep_graph():
    sims = torch.tensor([0.6, 0.8], requires_grad=True)
    stats = SimilarityStats()
    stats.update(sims * 1.0, sims * 0.5)
    assert all(b.grad_fn is None and not b.requires_grad for b in stats.buffers())


def test_momentum_blends_batch_statistics():
    stats = SimilarityStats(momentum=0.5)
    stats.update(torch.tensor([0.7, 0.9]), torch.tensor([0.0]))  # first batch sets: mean 0.8, var 0.02
    assert stats.pos_mean == pytest.approx(0.8)
    assert stats.pos_var == pytest.approx(0.02)
    stats.update(torch.tensor([0.5, 0.7]), torch.tensor([]))  # batch mean 0.6, var 0.02
    assert stats.pos_mean == pytest.approx(0.5 * 0.8 + 0.5 * 0.6)
    assert stats.pos_var == pytest.approx(0.02)
    assert stats.neg_mean == pytest.approx(0.0)  # an empty batch leaves a class unchanged


def test_histogram_densities_are_smoothed_and_normalised():
    # 4 bins of width 0.5 over [-1, 1]; positives fall in bins [0, 1, 0, 3] + smoothing 1
    # -> probabilities [1, 1, 2, 4] / 8 -> densities (x 4 / 2) [0.25, 0.25, 0.5, 1.0].
    stats = SimilarityStats(method="histogram", bins=4, smoothing=1.0)
    stats.update(torch.tensor([0.6, 0.7, 1.0, 0.2]), torch.tensor([-0.9]))
    p_pos, p_neg = stats.likelihoods(torch.tensor([0.75, -0.9, -0.2, 0.3, 2.0]))
    assert_close(p_pos, torch.tensor([1.0, 0.25, 0.25, 0.5, 1.0]))
    # negatives: counts [1, 0, 0, 0] + 1 -> [2, 1, 1, 1] / 5, densities x 2; never zero
    assert_close(p_neg, torch.tensor([0.4, 0.8, 0.4, 0.4, 0.4]))
    assert stats.pos_mean == pytest.approx(0.625)  # moments still kept for cut-down


def test_histogram_with_momentum_blends_counts():
    stats = SimilarityStats(method="histogram", bins=2, momentum=0.5)
    stats.update(torch.tensor([0.5, 0.5]), torch.tensor([-0.5]))  # pos counts [0, 2]
    stats.update(torch.tensor([-0.5, -0.5]), torch.tensor([]))  # batch [2, 0] -> [1, 1]
    assert stats.hist[0].tolist() == [1.0, 1.0]


def test_gaussian_likelihoods_match_normal_density():
    stats = _stats()
    sims = torch.tensor([[-0.5, 0.2], [0.8, 1.0]], dtype=F64)
    p_pos, p_neg = stats.likelihoods(sims)
    assert p_pos.shape == sims.shape
    std = math.sqrt(0.02)
    assert_close(p_pos, torch.distributions.Normal(0.8, std).log_prob(sims).exp())
    assert_close(p_neg, torch.distributions.Normal(0.2, std).log_prob(sims).exp())


def test_stats_state_dict_round_trip():
    for kwargs in ({}, {"momentum": 0.9}, {"method": "histogram", "bins": 8}):
        stats = _stats(**kwargs)
        restored = SimilarityStats(min_positives=2, **kwargs)
        restored.load_state_dict(stats.state_dict())
        assert restored.ready
        assert (restored.pos_mean, restored.pos_var, restored.neg_mean, restored.neg_var) == (
            stats.pos_mean, stats.pos_var, stats.neg_mean, stats.neg_var
        )
        sims = torch.linspace(-1, 1, 9)
        for a, b in zip(stats.likelihoods(sims), restored.likelihoods(sims)):
            assert torch.equal(a, b)
    with pytest.raises(RuntimeError):  # exact sums do not load into an EMA estimator
        SimilarityStats(momentum=0.9).load_state_dict(_stats().state_dict())


# --- reliable pairs ------------------------------------------------------------------


def test_select_reliable_pairs_hand_made_3x3():
    sim = torch.tensor([[0.9, 0.2, 0.3], [0.1, 0.8, 0.5], [0.4, 0.7, 0.6]])
    # Row argmax [0, 1, 1]: pair 2 fails; column argmax [0, 1, 2]. Reliable: pairs 0 and 1.
    pos, neg = select_reliable_pairs(sim)
    assert_close(pos, torch.tensor([0.9, 0.8]))
    # hardest of rows 0, 1 (0.3, 0.5), then of columns 0, 1 (0.4, 0.7)
    assert_close(neg, torch.tensor([0.3, 0.5, 0.4, 0.7]))


def test_select_reliable_pairs_needs_both_directions():
    # Pair 1 is top-1 in its row (0.8 > 0.1, 0.5) but column 1 prefers row 2 (0.85).
    sim = torch.tensor([[0.9, 0.2, 0.3], [0.1, 0.8, 0.5], [0.4, 0.85, 0.6]])
    pos, neg = select_reliable_pairs(sim)
    assert_close(pos, torch.tensor([0.9]))
    assert_close(neg, torch.tensor([0.3, 0.4]))
    pos, neg = select_reliable_pairs(torch.tensor([[0.5]]))
    assert pos.numel() == 0 and neg.numel() == 0
    with pytest.raises(ValueError):
        select_reliable_pairs(torch.zeros(2, 3))


# --- Bayes posterior ------------------------------------------------------------------


def test_false_negative_probability_prefers_positive_region():
    stats = _stats()
    p = false_negative_probability(torch.tensor([0.8, 0.2]), stats)
    assert p[0] > p[1]


def test_false_negative_probability_bounded_and_monotone():
    stats = _stats()
    sims = torch.linspace(-1, 1, 201, dtype=F64)
    p = false_negative_probability(sims, stats)
    assert p.shape == sims.shape
    assert bool(((p >= 0) & (p <= 1)).all())
    assert bool((p[1:] >= p[:-1]).all())  # equal variances, mu+ > mu-: the log-odds are linear in s


def test_false_negative_probability_exact_values():
    stats = _stats()
    # Equal variances and prior 0.5: the midpoint of the means is exactly undecided.
    midpoint = false_negative_probability(torch.tensor([0.5], dtype=F64), stats, prior=0.5)
    assert midpoint.item() == pytest.approx(0.5)
    # At s = mu+: log-odds = (0.6^2) / (2 * 0.02) + log(pi / (1 - pi)) = 9 + logit(1e-4).
    expected = 1 / (1 + math.exp(-(9 + math.log(1e-4 / (1 - 1e-4)))))
    got = false_negative_probability(torch.tensor([0.8], dtype=F64), stats).item()
    assert got == pytest.approx(expected)


def test_false_negative_probability_is_finite_where_densities_underflow():
    stats = SimilarityStats(min_positives=1, min_var=1e-6)
    stats.update(torch.tensor([0.9, 0.9]), torch.tensor([0.0, 0.0]))  # zero variance: floored
    p = false_negative_probability(torch.tensor([-1.0, 0.45, 1.0]), stats)
    assert bool(torch.isfinite(p).all())
    assert p[0].item() == 0.0 and p[2].item() == 1.0


# --- weights --------------------------------------------------------------------------


def test_weights_before_ready_are_kernel_positive_mask_and_cut_down_at_mean_zero():
    stats = SimilarityStats(min_positives=10)
    sims = torch.tensor([[0.9, 0.5, 0.1, -0.3]], dtype=F64)
    mask = torch.tensor([[True, False, False, False]])
    weights, switched = sampling_weights(sims, torch.tensor([0.9], dtype=F64), mask, stats)
    # the original's kernel exp(-0.5 (s - 0.9)^2): exp(-0.08), exp(-0.32); before any positive the running
    # mean is 0, so the cut-down (as in the original) already zeroes s <= 0 - 0.2
    assert_close(weights, torch.tensor([[0.0, math.exp(-0.08), math.exp(-0.32), 0.0]], dtype=F64))
    assert not switched.any()
    weights, _ = sampling_weights(sims, torch.tensor([0.9], dtype=F64), mask, stats, cut_down=False)
    assert weights[0, 3] == pytest.approx(math.exp(-0.5 * 1.44))


def test_cut_down_zeroes_easy_negatives():
    stats = _stats()  # pos_mean 0.8 -> easy below 0.6
    sims = torch.tensor([[0.95, 0.7, 0.55, 0.3]], dtype=F64)
    pos_sims = torch.tensor([0.95], dtype=F64)
    mask = torch.tensor([[True, False, False, False]])
    weights, _ = sampling_weights(sims, pos_sims, mask, stats)
    assert weights[0, 0] == 0  # known positive
    assert weights[0, 1] > 0
    assert weights[0, 2] == 0 and weights[0, 3] == 0  # s <= 0.8 - 0.2
    weights, _ = sampling_weights(sims, pos_sims, mask, stats, cut_down=False)
    assert bool((weights[0, 1:] > 0).all())


def test_likely_false_negatives_are_down_weighted():
    stats = _stats()
    sims = torch.tensor([[0.9, 0.8, 0.4]], dtype=F64)
    pos_sims = torch.tensor([0.9], dtype=F64)
    mask = torch.tensor([[True, False, False]])
    weights, switched = sampling_weights(sims, pos_sims, mask, stats, cut_down=False)
    kernel = torch.exp(-0.5 * (sims - 0.9).square())  # the original's tau = 0.5
    p_fn = false_negative_probability(sims, stats)
    # s = 0.8 sits at the positive mean: P_fn ~ 0.45 > 1e-3, weight exp(-0.5 P_fn) < its kernel 0.995
    assert p_fn[0, 1] > 1e-3 and switched[0, 1]
    assert_close(weights[0, 1], torch.exp(-0.5 * p_fn[0, 1]))
    assert weights[0, 1] < kernel[0, 1]
    # s = 0.4: P_fn ~ 5e-6 < 1e-3, the kernel stays
    assert p_fn[0, 2] < 1e-3 and not switched[0, 2]
    assert_close(weights[0, 2], kernel[0, 2])


# --- draws ------------------------------------------------------------------------------


def test_zero_weight_candidates_never_drawn_and_frequencies_follow_weights():
    weights = torch.tensor([[0.0, 1.0, 0.0, 3.0], [2.0, 0.0, 0.0, 2.0]])
    no_pos = torch.zeros(2, 4, dtype=torch.bool)
    gen = torch.Generator().manual_seed(0)
    idx, drawn = sample_negatives(torch.rand(2, 4), weights, no_pos, num_samples=4000, generator=gen)
    assert set(idx[0].tolist()) == {1, 3} and set(idx[1].tolist()) == {0, 3}
    assert bool((drawn > 0).all())
    assert (idx[0] == 3).float().mean().item() == pytest.approx(0.75, abs=0.03)


def test_known_positives_never_drawn_even_with_weight():
    weights = torch.ones(3, 5)
    mask = torch.zeros(3, 5, dtype=torch.bool)
    mask[0, :2] = mask[1, 4] = mask[2, 2] = True
    gen = torch.Generator().manual_seed(1)
    idx, _ = sample_negatives(torch.rand(3, 5), weights, mask, num_samples=500, generator=gen)
    assert not bool(mask.gather(1, idx).any())


def test_draws_without_replacement_when_possible():
    weights = torch.tensor([[1.0, 0.0, 1.0, 1.0]])
    idx, _ = sample_negatives(torch.rand(1, 4), weights, torch.zeros(1, 4, dtype=torch.bool), num_samples=3)
    assert sorted(idx[0].tolist()) == [0, 2, 3]


def test_all_zero_row_falls_back_to_hardest_non_positive():
    sims = torch.tensor([[0.9, 0.8, 0.3, 0.5], [0.1, 0.2, 0.3, 0.4]])
    weights = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False, False], [False, False, False, False]])
    idx, drawn = sample_negatives(sims, weights, mask, num_samples=2)
    assert idx.tolist() == [[3, 3], [1, 1]]  # 0.5 is the best non-positive of row 0
    assert drawn.tolist() == [[0.0, 0.0], [1.0, 1.0]]  # fallback draws report their zero weight
    with pytest.raises(ValueError):
        sample_negatives(sims[:1], weights[:1], torch.ones(1, 4, dtype=torch.bool))


# --- FNESampler ---------------------------------------------------------------------------


def test_sampler_warmup_returns_hardest_then_samples():
    sampler = FNESampler(stats=SimilarityStats(min_positives=2), warmup_epochs=1)
    sims = torch.tensor([[0.9, 0.85, 0.7, 0.1], [0.2, 0.8, 0.75, 0.6]])
    pos_sims = sims.diagonal()
    mask = torch.eye(2, 4, dtype=torch.bool)
    out = sampler(sims, pos_sims, mask)
    assert sampler.in_warmup
    assert out.indices.tolist() == [[1], [2]]
    assert out.weights.tolist() == [[0, 1, 0, 0], [0, 0, 1, 0]]
    assert not out.switched.any() and out.drawn_weights.tolist() == [[1.0], [1.0]]

    sampler.update_stats(torch.tensor([[0.9, 0.2, 0.3], [0.1, 0.8, 0.5], [0.4, 0.7, 0.6]]))
    assert sampler.stats.ready
    sampler.start_epoch(1)
    assert not sampler.in_warmup and not sampler.stats.ready  # a new epoch resets statistics
    sampler.update_stats(torch.tensor([[0.9, 0.2, 0.3], [0.1, 0.8, 0.5], [0.4, 0.7, 0.6]]))
    gen = torch.Generator().manual_seed(0)
    indices, drawn, weights, switched = sampler(sims, pos_sims, mask, num_samples=50, generator=gen)
    expected_w, expected_switched = sampling_weights(sims, pos_sims, mask, sampler.stats)
    assert_close(weights, expected_w)
    assert torch.equal(switched, expected_switched)
    assert bool((weights.gather(1, indices) > 0).all())
    assert_close(drawn, weights.gather(1, indices))


def test_sampler_state_dict_round_trip():
    sampler = FNESampler(warmup_epochs=2)
    sampler.start_epoch(3)
    sampler.update_stats(torch.tensor([[0.9, 0.2, 0.3], [0.1, 0.8, 0.5], [0.4, 0.7, 0.6]]))
    restored = FNESampler(warmup_epochs=2)
    restored.load_state_dict(sampler.state_dict())
    assert int(restored.epoch) == 3 and not restored.in_warmup
    assert restored.stats.pos_mean == pytest.approx(0.85)
    assert restored.stats.neg_mean == pytest.approx((0.3 + 0.5 + 0.4 + 0.7) / 4)


@pytest.mark.parametrize("pos_std, neg_std", [(0.05, 0.2), (0.2, 0.05), (0.1, 0.1), (0.1, 0.11)])  # a > 0, < 0, 0, ~0
@pytest.mark.parametrize("limit", [-30.0, -3.0, 0.0, 4.0, 200.0])
@pytest.mark.parametrize("within", [math.inf, 1.0])  # 1.0: roots beyond |s| = 1 are dropped
def test_log_odds_above_a_limit_from_the_roots_matches_the_quadratic(pos_std, neg_std, limit, within):
    stats = SimilarityStats(min_positives=1)
    stats.update(0.7 + pos_std * torch.tensor([-1.0, 1.0], dtype=F64), 0.3 + neg_std * torch.tensor([-1.0, 1.0], dtype=F64))
    sims = torch.linspace(-1, 1, 2001, dtype=F64)
    log_odds = stats.log_odds(sims, offset=-2.0)
    expected = log_odds > limit
    above = stats.log_odds_above(sims, limit, offset=-2.0, within=within)
    near_root = (log_odds - limit).abs() < 1e-9
    assert torch.equal(above[~near_root], expected[~near_root])


# --- statistics variants ----------------------------------------------------------------


def test_select_all_pairs_takes_every_pair():
    from ifnd.falseneg.bayes import select_all_pairs

    sim = torch.tensor([[0.9, 0.2, 0.3], [0.1, 0.8, 0.5], [0.4, 0.7, 0.6]])  # pair 2 is not reliable
    pos, neg = select_all_pairs(sim)
    assert_close(pos, torch.tensor([0.9, 0.8, 0.6]))
    # hardest of rows 0, 1, 2 (0.3, 0.5, 0.7), then of columns 0, 1, 2 (0.4, 0.7, 0.5)
    assert_close(neg, torch.tensor([0.3, 0.5, 0.7, 0.4, 0.7, 0.5]))
    assert select_all_pairs(torch.tensor([[0.5]]))[0].numel() == 0


def test_all_pairs_make_the_statistics_ready_sooner():
    sim = torch.tensor([[0.9, 0.2, 0.3], [0.1, 0.8, 0.5], [0.4, 0.7, 0.6]])  # 2 reliable pairs of 3
    reliable = FNESampler(SimilarityStats(min_positives=3))
    every = FNESampler(SimilarityStats(min_positives=3), stats_pairs="all")
    reliable.update_stats(sim)
    every.update_stats(sim)
    assert not reliable.stats.ready and every.stats.ready
    assert every.stats.pos_mean == pytest.approx((0.9 + 0.8 + 0.6) / 3)
    assert every.stats.neg_mean == pytest.approx((0.3 + 0.5 + 0.7 + 0.4 + 0.7 + 0.5) / 6)


def test_running_statistics_survive_the_epoch_start():
    sim = torch.tensor([[0.9, 0.2, 0.3], [0.1, 0.8, 0.5], [0.4, 0.7, 0.6]])
    faithful, running = FNESampler(SimilarityStats(min_positives=3)), FNESampler(SimilarityStats(min_positives=3),
                                                                                 stats_reset="never")
    for epoch in (0, 1):
        for sampler in (faithful, running):
            sampler.start_epoch(epoch)
            sampler.update_stats(sim)
    assert int(faithful.stats.count[0]) == 2 and not faithful.stats.ready  # reset at epoch 1: 2 reliable pairs
    assert int(running.stats.count[0]) == 4 and running.stats.ready  # both epochs' pairs
    assert running.stats.pos_mean == pytest.approx(0.85) and int(running.epoch) == 1
    running.reset()  # an explicit reset still clears them
    assert int(running.stats.count[0]) == 0


def test_statistics_variants_come_from_the_config():
    from types import SimpleNamespace

    neg = SimpleNamespace(sampler="fne", min_positives=20, tau=0.5, prior=1e-4, fn_threshold=1e-3, cut_down=True,
                          cut_margin=0.2, warmup_epochs=1, stats_pairs="all", stats_reset="never")
    sampler = FNESampler.from_config(SimpleNamespace(negatives=neg))
    assert sampler.stats.min_positives == 20 and sampler.stats_reset == "never"
    sampler.update_stats(torch.tensor([[0.2, 0.9], [0.8, 0.1]]))  # no reliable pair, 2 pairs
    assert int(sampler.stats.count[0]) == 2
    with pytest.raises(ValueError, match="stats_pairs"):
        FNESampler(stats_pairs="top1")
