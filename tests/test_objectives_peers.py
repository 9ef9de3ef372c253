"""The peer objectives against the originals' formulas, written out here for the SimCLR 2N layout,
against lightly's DCLLoss / DCLWLoss, and under our masks on hand-made logits."""

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightly.loss import DCLLoss, DCLWLoss

from ifnd.config import Config, ConfigError
from ifnd.losses import LossMasks, info_nce, loss_masks, moco_layout, simclr_layout
from ifnd.objectives import debiased, decoupled, hard_negatives
from ifnd.objectives.debiased import debiased_contrastive
from ifnd.objectives.decoupled import decoupled_contrastive, von_mises_fisher_weights


def original_debiased(out_1, out_2, temperature, tau_plus, beta=None):
    """chingyaoc/DCL main.py's loss (beta None) and joshr17/HCL image/main.py's criterion, in their steps."""
    batch = out_1.shape[0]
    out = torch.cat([out_1, out_2])
    neg = torch.exp(out @ out.T / temperature)
    keep = torch.ones(batch, 2 * batch, dtype=torch.bool)
    for i in range(batch):
        keep[i, i] = keep[i, i + batch] = False
    neg = neg.masked_select(torch.cat([keep, keep])).view(2 * batch, -1)
    pos = torch.exp((out_1 * out_2).sum(-1) / temperature)
    pos = torch.cat([pos, pos])
    n = 2 * batch - 2
    if beta is None:
        total = neg.sum(-1)
    else:
        imp = (beta * neg.log()).exp()
        total = (imp * neg).sum(-1) / imp.mean(-1)
    ng = torch.clamp((-tau_plus * n * pos + total) / (1 - tau_plus), min=n * np.e ** (-1 / temperature))
    return (-torch.log(pos / (pos + ng))).mean(), ng, n * np.e ** (-1 / temperature)


def views(batch=6, dim=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    z1 = F.normalize(torch.randn(batch, dim, generator=generator, dtype=torch.float64), dim=1)
    z2 = F.normalize(z1 + 0.3 * torch.randn(batch, dim, generator=generator, dtype=torch.float64), dim=1)
    return z1, z2


def simclr(z1, z2, temperature, false_negatives=None, mode="elimination"):
    logits, positive, exclude, _ = simclr_layout(z1, z2, torch.arange(len(z1)), temperature)
    return logits, loss_masks(positive, false_negatives, exclude, mode)


@pytest.mark.parametrize("temperature,tau_plus", [(0.5, 0.1), (0.2, 0.3), (0.5, 0.9)])
def test_debiased_equals_the_original_on_the_simclr_layout(temperature, tau_plus):
    z1, z2 = views()
    expected, ng, floor = original_debiased(z1, z2, temperature, tau_plus)
    ours = debiased_contrastive(*simclr(z1, z2, temperature), temperature, tau_plus)
    assert ours.item() == pytest.approx(expected.item(), rel=1e-5)
    if tau_plus == 0.9:
        assert bool((ng == floor).any())  # the floor N e^{-1/t} binds on some rows and is matched too


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
def test_hard_negatives_equal_the_original_on_the_simclr_layout(beta):
    z1, z2 = views(seed=1)
    expected, _, _ = original_debiased(z1, z2, 0.5, 0.1, beta)
    ours = debiased_contrastive(*simclr(z1, z2, 0.5), 0.5, 0.1, beta)
    assert ours.item() == pytest.approx(expected.item(), rel=1e-5)


def test_hard_negatives_gradient_equals_the_originals():
    z1, z2 = views(seed=2)
    z1.requires_grad_(True)
    original_debiased(z1, z2, 0.5, 0.1, 1.0)[0].backward()
    expected, z1.grad = z1.grad.clone(), None
    debiased_contrastive(*simclr(z1, z2, 0.5), 0.5, 0.1, 1.0).backward()  # hardness weights not detached, as theirs
    assert torch.allclose(z1.grad, expected.to(z1.grad.dtype), atol=1e-5)


def test_reductions_tau_plus_zero_is_info_nce_and_beta_zero_is_debiased():
    z1, z2 = views(seed=3)
    detected = torch.zeros(12, 12, dtype=torch.bool)
    detected[0, [1, 7]] = detected[4, 2] = True
    for mode in ("elimination", "attraction"):
        logits, masks = simclr(z1, z2, 0.5, detected, mode)
        assert debiased_contrastive(logits, masks, 0.5, 0.0).item() == pytest.approx(info_nce(logits, masks).item(), rel=1e-6)
    # beta = 0 with no masks is the original DCL (HCL's own reduction)
    logits, masks = simclr(z1, z2, 0.5)
    assert debiased_contrastive(logits, masks, 0.5, 0.2, beta=0.0).item() == pytest.approx(
        original_debiased(z1, z2, 0.5, 0.2)[0].item(), rel=1e-5)


def test_debiased_under_elimination_and_attraction_by_hand():
    t, tau = 0.5, 0.2
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0]])
    positive = torch.tensor([[True, False, False, False]])
    detected = torch.tensor([[False, True, False, False]])
    floor = lambda n: n * math.exp(-1 / t)  # noqa: E731
    # elimination: candidate 1 leaves; the negatives are {0.5, 0.0}, N = 2
    corrected = (math.exp(0.5) + 1 - tau * 2 * math.exp(2.0)) / (1 - tau)
    ng = max(corrected, floor(2))
    expected = -math.log(math.exp(2.0) / (math.exp(2.0) + ng))
    ours = debiased_contrastive(logits, loss_masks(positive, detected, mode="elimination"), t, tau)
    assert corrected < floor(2) and ours.item() == pytest.approx(expected, abs=1e-6)  # the floor binds here
    # attraction: positives {2.0, 1.0}; the correction uses their mean e^{l}; mean log-likelihood over them
    tau = 0.05
    ng = max((math.exp(0.5) + 1 - tau * 2 * (math.exp(2.0) + math.exp(1.0)) / 2) / (1 - tau), floor(2))
    expected = math.log(math.exp(2.0) + math.exp(1.0) + ng) - (2.0 + 1.0) / 2
    ours = debiased_contrastive(logits, loss_masks(positive, detected, mode="attraction"), t, tau)
    assert ng > floor(2) and ours.item() == pytest.approx(expected, abs=1e-6)


def test_debiased_on_the_moco_layout_by_the_original_formula():
    generator = torch.Generator().manual_seed(4)
    q, k, queue = (F.normalize(torch.randn(n, 4, generator=generator), dim=1) for n in (3, 3, 10))
    logits, positive = moco_layout(q, k, queue, 0.2)
    pos, neg, n = logits[:, 0].exp(), logits[:, 1:].exp(), 10
    ng = torch.clamp((neg.sum(-1) - 0.1 * n * pos) / 0.9, min=n * math.exp(-1 / 0.2))
    expected = (-torch.log(pos / (pos + ng))).mean()
    ours = debiased_contrastive(logits, loss_masks(positive), 0.2, 0.1)
    assert ours.item() == pytest.approx(expected.item(), rel=1e-5)


def test_levels_average_and_float32_inside():
    z1, z2 = views(seed=5)
    logits, positive, exclude, _ = simclr_layout(z1.float(), z2.float(), torch.arange(6), 0.5)
    first, second = torch.zeros(12, 12, dtype=torch.bool), torch.zeros(12, 12, dtype=torch.bool)
    first[0, 3] = second[2, 5] = second[2, 6] = True
    both = loss_masks(positive, torch.stack([first, second]), exclude)
    for loss in (lambda lg, m: debiased_contrastive(lg, m, 0.5, 0.1, 1.0), decoupled_contrastive):
        each = [loss(logits, loss_masks(positive, fn, exclude)) for fn in (first, second)]
        assert loss(logits, both).item() == pytest.approx(sum(each).item() / 2, rel=1e-6)
        low = loss(logits.bfloat16(), both)
        assert low.dtype == torch.float32


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_decoupled_equals_lightly_dcl_and_dclw_on_the_simclr_layout(temperature):
    z1, z2 = (z.float() for z in views(batch=8, dim=5, seed=6))
    logits, masks = simclr(z1, z2, temperature)
    assert decoupled_contrastive(logits, masks).item() == pytest.approx(
        DCLLoss(temperature=temperature)(z1, z2).item(), rel=1e-5)
    for sigma in (0.5, 0.2):
        weights = von_mises_fisher_weights(logits, masks, temperature, sigma)
        with warnings.catch_warnings():  # lightly builds its weights with torch.tensor(tensor), which warns
            warnings.simplefilter("ignore", UserWarning)
            theirs = DCLWLoss(temperature=temperature, sigma=sigma)(z1, z2)
        assert decoupled_contrastive(logits, masks, weights).item() == pytest.approx(theirs.item(), rel=1e-5)


def test_decoupled_under_masks_by_hand():
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0], [0.3, 1.5, -1.0, 0.2]])
    positive = torch.tensor([[True, False, False, False], [True, False, False, False]])
    detected = torch.tensor([[False, True, False, False], [False, False, False, False]])
    plain = [-0.3 + math.log(math.exp(1.5) + math.exp(-1.0) + math.exp(0.2))]  # row 1: nothing detected
    eliminated = -2.0 + math.log(math.exp(0.5) + 1)
    attracted = -(2.0 + 1.0) / 2 + math.log(math.exp(0.5) + 1)
    for mode, first in (("elimination", eliminated), ("attraction", attracted)):
        ours = decoupled_contrastive(logits, loss_masks(positive, detected, mode=mode))
        assert ours.item() == pytest.approx((first + plain[0]) / 2, rel=1e-6)
    # MoCo: column 0 the own key, the queue after it; lightly's layout cannot hold this one
    assert decoupled_contrastive(logits[:1], LossMasks(None, positive[:1].float())).item() == pytest.approx(
        -2.0 + math.log(math.exp(1.0) + math.exp(0.5) + 1), rel=1e-6)


def test_a_row_without_negatives_counts_zero_as_in_info_nce():
    """MoCo's first step: the queue is empty, the logits are the positives alone."""
    logits = torch.tensor([[1.5], [0.2]], requires_grad=True)
    masks = loss_masks(torch.ones(2, 1, dtype=torch.bool))
    for loss in (info_nce, decoupled_contrastive, lambda lg, m: debiased_contrastive(lg, m, 0.2, 0.1, 1.0)):
        value = loss(logits, masks)
        value.backward()
        assert value.item() == pytest.approx(0.0, abs=1e-7) and torch.isfinite(logits.grad).all()
        logits.grad = None


def config(**objective):
    return Config({"method": "moco", "moco": {"temperature": 0.2}, "simclr": {"temperature": 0.5},
                   "objective": {"tau_plus": 0.1, "beta": 1.0, "sigma": 0.5, **objective}})


def test_builders_read_their_keys_and_the_method_temperature():
    generator = torch.Generator().manual_seed(7)
    q, k, queue = (F.normalize(torch.randn(n, 4, generator=generator), dim=1) for n in (4, 4, 9))
    logits, positive = moco_layout(q, k, queue, 0.2)
    masks = loss_masks(positive)
    assert debiased.build(config())(logits, masks) == debiased_contrastive(logits, masks, 0.2, 0.1)
    assert hard_negatives.build(config(beta=2.0))(logits, masks) == debiased_contrastive(logits, masks, 0.2, 0.1, 2.0)
    assert decoupled.build(config())(logits, masks) == decoupled_contrastive(logits, masks)
    weights = von_mises_fisher_weights(logits, masks, 0.2, 0.3)
    assert decoupled.build_weighted(config(sigma=0.3))(logits, masks) == decoupled_contrastive(logits, masks, weights)
    for build, key, value in ((debiased.build, "tau_plus", 1.0), (hard_negatives.build, "beta", -1.0),
                              (decoupled.build_weighted, "sigma", 0.0)):
        with pytest.raises(ConfigError, match=f"objective.{key}"):
            build(config(**{key: value}))


@pytest.mark.parametrize("method, name", [("simclr", "debiased"), ("moco", "hard_negatives"), ("simclr", "decoupled")])
def test_a_peer_objective_trains_through_the_registry(tiny_cfg, method, name):
    from ifnd.pretrain.task import pretrain

    metrics = pretrain(tiny_cfg(method=method, objective={"name": name}, train={"epochs": 1}))
    assert metrics["epochs_done"] == 1 and all(math.isfinite(h["loss"]) for h in metrics["history"])
