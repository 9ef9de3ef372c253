"""Evidence that each part of FNE acts: per-epoch figures of the sampler in ``itm-train``.

Every FNE draw of an epoch is observed: whether the statistics were ready, the share of
candidates whose false-negative probability passed the switch (where the Bayes step replaces
the closeness kernel), and, where the data know which captions fit which images (the demo's
classes), the mean sampling weight given to true false negatives (same class, another image)
and to true negatives. :meth:`FNEMonitor.record` turns the sums into the ``fne/...`` keys of
the epoch record (metrics.json and TensorBoard), with the two Gaussians' means and stds.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ifnd.falseneg.bayes import SampledNegatives, SimilarityStats
from ifnd.runtime import distributed as dist

FIELDS = ("calls", "ready", "candidates", "above", "fn_weight", "fn_count", "neg_weight", "neg_count")


class FNEMonitor:
    """Sums over one epoch's FNE draws (reset with :meth:`reset`, summed over ranks in :meth:`record`)."""

    def __init__(self) -> None:
        self.sums = torch.zeros(len(FIELDS), dtype=torch.float64)

    def reset(self) -> None:
        self.sums.zero_()

    @torch.no_grad()
    def observe(self, draws: SampledNegatives, positive: Tensor, ready: bool, same_class: Tensor | None) -> None:
        """One sampler call.

        Args:
            draws: its result (``weights [B, N]``, ``switched [B, N]``).
            positive: ``[B, N]`` bool, the known positives (same image).
            ready: whether the statistics were ready.
            same_class: ``[B, N]`` bool, candidates of the anchor's class, or None when the data have no classes.
        """
        negative = ~positive
        values = [1.0, float(ready), float(negative.sum()), float((draws.switched & negative).sum())]
        if same_class is None:
            values += [0.0, 0.0, 0.0, 0.0]
        else:
            true_fn, true_neg = same_class & negative, ~same_class
            values += [float(draws.weights[true_fn].sum()), float(true_fn.sum()),
                       float(draws.weights[true_neg].sum()), float(true_neg.sum())]
        self.sums += torch.tensor(values, dtype=torch.float64)

    def record(self, stats: SimilarityStats) -> dict[str, float]:
        """The epoch's ``fne/...`` figures (sums over every rank); NaN where nothing was observed."""
        sums = dict(zip(FIELDS, dist.sum_tensor(self.sums).tolist()))

        def ratio(a: str, b: str) -> float:
            return sums[a] / sums[b] if sums[b] else math.nan

        return {
            "fne/calls": sums["calls"],
            "fne/ready_share": ratio("ready", "calls"),
            "fne/above_switch_share": ratio("above", "candidates"),
            "fne/weight_true_fn": ratio("fn_weight", "fn_count"),
            "fne/weight_true_neg": ratio("neg_weight", "neg_count"),
            "fne/pos_mean": stats.pos_mean, "fne/pos_std": math.sqrt(max(stats.pos_var, 0.0)),
            "fne/neg_mean": stats.neg_mean, "fne/neg_std": math.sqrt(max(stats.neg_var, 0.0)),
            "fne/reliable_pairs": float(stats.count[0]),
        }
