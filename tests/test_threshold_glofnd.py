"""The threshold detector against GloFND's LambdaThreshold (vibalcam/GloFND, fnd.py), written out here."""

import pytest
import torch
import torch.nn.functional as F

from ifnd.falseneg.threshold import AnchorThresholds
from ifnd.losses import simclr_layout


class GloFNDReference:
    """GloFND's update and mask for SimCLR's two views, in its steps: Adam on alpha - share above."""

    def __init__(self, n, alpha, lr, beta1=0.9, beta2=0.98, eps=1e-8):
        self.lda, self.m, self.v = torch.ones(n, 1), torch.zeros(n, 1), torch.zeros(n, 1)
        self.alpha, self.lr, self.beta1, self.beta2, self.eps = alpha, lr, beta1, beta2, eps

    def step(self, h1, h2, index, epoch):
        """Returns the two views' masks of detected pairs, columns [other view | same view]."""
        batch = len(h1)
        same = F.one_hot(torch.arange(batch), batch)
        sim_a = torch.cat([h1 @ h2.T, h1 @ h1.T], 1)  # [ab | aa]
        sim_b = torch.cat([h2 @ h1.T, h2 @ h2.T], 1)  # [ba | bb]
        neg_self = 1 - same.repeat(1, 2)
        sim = torch.stack([sim_a, sim_b], -1)
        lda = self.lda[index]
        above = ((sim > lda.unsqueeze(-1)).int() * neg_self.unsqueeze(-1)).sum(-1).sum(1, keepdim=True)
        grad = self.alpha - above / (2 * neg_self[0].sum())
        m = self.beta1 * self.m[index] + (1 - self.beta1) * grad
        v = self.beta2 * self.v[index] + (1 - self.beta2) * grad ** 2
        self.m[index], self.v[index] = m, v
        m_hat, v_hat = m / (1 - self.beta1 ** (epoch + 1)), v / (1 - self.beta2 ** (epoch + 1))
        self.lda[index] = (lda - self.lr * m_hat / (v_hat ** 0.5 + self.eps)).clamp(-1, 1)
        return [(1 - (s <= self.lda[index]).float()) * neg_self for s in (sim_a, sim_b)]


def test_adam_thresholds_from_one_equal_glofnd_step_by_step():
    n, batch = 8, 4
    ours = AnchorThresholds(n, quantile=0.2, lr=0.05, optimizer="adam", init="one")
    reference = GloFNDReference(n, alpha=0.2, lr=0.05)
    generator = torch.Generator().manual_seed(0)
    centres = F.normalize(torch.randn(n, 3, generator=generator), dim=1)
    flagged = 0
    for epoch in range(6):
        for index in torch.randperm(n, generator=generator).view(-1, batch):
            h1, h2 = (F.normalize(centres[index] + 0.3 * torch.randn(batch, 3, generator=generator), dim=1)
                      for _ in range(2))
            theirs_a, theirs_b = reference.step(h1, h2, index, epoch)
            logits, _, _, ids2 = simclr_layout(h1, h2, index, temperature=1.0)
            mask = ours.masks(ids2, ids2, logits, detect=True, learn=True, epoch=epoch)[0].float()
            assert torch.allclose(ours.values, reference.lda.squeeze(1), atol=1e-6)
            # our columns are [view 1 | view 2]: theirs are [other view | same view]
            assert torch.equal(mask[:batch], torch.cat([theirs_a[:, batch:], theirs_a[:, :batch]], 1))
            assert torch.equal(mask[batch:], theirs_b)
            flagged += int(mask.sum())
    assert flagged > 0 and bool((ours.values < 1).all())  # the thresholds did walk down and flag pairs


def test_no_learning_before_start_and_adam_state_in_checkpoints():
    thresholds = AnchorThresholds(4, quantile=0.25, lr=0.05, optimizer="adam", init="one")
    ids = torch.tensor([0, 1])
    sims = torch.tensor([[1.0, 0.9, 0.2, 0.1], [0.9, 1.0, 0.8, 0.0]])
    assert thresholds.masks(ids, torch.arange(4), sims, detect=False, learn=False) is None
    assert thresholds.values.tolist() == [1.0] * 4 and not thresholds.moments.any()  # GloFND's start_update
    thresholds.masks(ids, torch.arange(4), sims, detect=False, learn=True, epoch=3)
    assert thresholds.moments[:, :2].ne(0).all() and thresholds.values[:2].lt(1).all()
    fresh = AnchorThresholds(4, quantile=0.25, lr=0.05, optimizer="adam", init="one")
    fresh.load_state_dict(thresholds.state_dict())
    assert torch.equal(fresh.moments, thresholds.moments) and torch.equal(fresh.values, thresholds.values)
    with pytest.raises(ValueError, match="threshold_optimizer"):
        AnchorThresholds(4, quantile=0.25, lr=0.05).load_state_dict(thresholds.state_dict())
    with pytest.raises(ValueError, match="optimizer"):
        AnchorThresholds(4, quantile=0.25, lr=0.05, optimizer="adamw")
