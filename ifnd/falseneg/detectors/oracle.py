"""``oracle`` and ``noisy_oracle``: the true classes as pseudo-labels (upper bounds of detection).

``detection.oracle: full``: every label from the first step (one round before epoch 0, share 1.0);
``scheduled``: accepted on IFND's schedule over a random subset drawn with the run's seed (perfect
precision at IFND's schedule). ``noisy_oracle`` degrades the oracle's pairs to a chosen pair
precision and recall (:func:`~ifnd.falseneg.masks.noisy_oracle_mask`): where detection must be to
gain anything.
"""

from __future__ import annotations

from typing import Any

import torch

from ifnd.config import ConfigError
from ifnd.falseneg.detectors.base import LossPolicy, RoundSchedule, TableDetector, require_true_labels
from ifnd.falseneg.masks import noisy_oracle_mask, partner_classes
from ifnd.runtime.seeding import generator


class OracleDetector(TableDetector):
    """One level: the true classes, all at once (``full``) or on the round schedule (``scheduled``).

    Args:
        policy, schedule, num_samples: see :class:`TableDetector`.
        full: ``detection.oracle == "full"``.
        true_labels: ``[N]`` long.
    """

    mode = "oracle"

    def __init__(self, policy: LossPolicy, schedule: RoundSchedule, full: bool, num_samples: int,
                 true_labels: torch.Tensor):
        super().__init__(policy, schedule, 1, num_samples, true_labels)
        self.full = full

    @classmethod
    def from_config(cls, cfg: Any, num_samples: int, embed_dim: int,
                    true_labels: torch.Tensor | None) -> "OracleDetector":
        return cls(LossPolicy.from_config(cfg), RoundSchedule.from_config(cfg),
                   cfg.detection.oracle == "full", num_samples, require_true_labels(cls.mode, true_labels))

    def wants_round(self, epoch: int) -> bool:
        """``full``: one round, before the first step; ``scheduled``: on the round schedule."""
        return self.last_round < 0 if self.full else super().wants_round(epoch)

    def round_share(self, epoch: int) -> float:
        return 1.0 if self.full else super().round_share(epoch)

    def assign(self, epoch: int, features: torch.Tensor | None, ids: torch.Tensor | None = None,
               device: torch.device | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The true labels; as confidences, a random rank per sample fixed for the run, so that the
        accepted share is a seeded random subset that grows round by round (equal confidences would
        accept an index prefix)."""
        self.centroids = []
        return [self.true_labels], [torch.rand(len(self.true_labels), generator=generator(self.schedule.seed, "oracle"))]


class NoisyOracleDetector(OracleDetector):
    """The oracle's pairs at pair precision ``detection.oracle_precision`` and recall ``oracle_recall``;
    false detections fall on pairs of confusable (partner) classes.

    Args:
        precision, recall: the pair precision and recall the masks reach in expectation.
        others: see :class:`OracleDetector`.
    """

    mode = "noisy_oracle"

    def __init__(self, policy: LossPolicy, schedule: RoundSchedule, full: bool, num_samples: int,
                 true_labels: torch.Tensor, precision: float, recall: float):
        super().__init__(policy, schedule, full, num_samples, true_labels)
        self.recall = recall
        try:
            self.partners, self.false_rate = partner_classes(true_labels, precision, recall, schedule.seed)
        except ValueError as err:
            raise ConfigError(f"detection.oracle_precision / oracle_recall: {err}") from err

    @classmethod
    def from_config(cls, cfg: Any, num_samples: int, embed_dim: int,
                    true_labels: torch.Tensor | None) -> "NoisyOracleDetector":
        det = cfg.detection
        return cls(LossPolicy.from_config(cfg), RoundSchedule.from_config(cfg), det.oracle == "full",
                   num_samples, require_true_labels(cls.mode, true_labels), det.oracle_precision, det.oracle_recall)

    def table_masks(self, anchor_ids: torch.Tensor, candidate_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return noisy_oracle_mask(anchor_ids, candidate_ids, labels[0], self.partners, self.recall, self.false_rate,
                                 self.schedule.seed).unsqueeze(0)
