"""``threshold``: no table and no rounds; a learned similarity threshold per anchor
(:class:`~ifnd.falseneg.threshold.AnchorThresholds`, GloFND's kind), learned from
``detection.threshold_start_epoch`` and detecting once ``detection.warmup_epochs`` have passed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ifnd.config import ConfigError
from ifnd.falseneg.detectors.base import Detector, LossPolicy, SupportViews, detection_settings
from ifnd.falseneg.threshold import AnchorThresholds


@dataclass(frozen=True)
class ThresholdSettings:
    """The ``detection.*`` keys of the threshold detector."""

    warmup_epochs: int
    threshold_quantile: float
    threshold_lr: float
    threshold_optimizer: str
    threshold_init: str
    threshold_start_epoch: int


class ThresholdDetector(Detector):
    """Thresholds of every training sample, updated at every :meth:`masks` call.

    Args:
        policy: see :class:`~ifnd.falseneg.detectors.base.Detector`.
        settings: warm-up, quantile and step size.
        num_samples: N.
    """

    needs_similarities = True

    def __init__(self, policy: LossPolicy, settings: ThresholdSettings, num_samples: int):
        super().__init__(policy)
        if settings.threshold_start_epoch > settings.warmup_epochs:
            raise ConfigError(f"detection.threshold_start_epoch={settings.threshold_start_epoch} is after "
                              f"detection.warmup_epochs={settings.warmup_epochs}: thresholds would be used before "
                              "they learn; lower it")
        self.settings = settings
        self.thresholds = AnchorThresholds(num_samples, settings.threshold_quantile, settings.threshold_lr,
                                           settings.threshold_optimizer, settings.threshold_init)

    @classmethod
    def from_config(cls, cfg: Any, num_samples: int, embed_dim: int,
                    true_labels: torch.Tensor | None) -> "ThresholdDetector":
        return cls(LossPolicy.from_config(cfg), detection_settings(ThresholdSettings, cfg),
                   num_samples)

    @property
    def active(self) -> bool:
        """Once the warm-up is over."""
        return self.epoch >= self.settings.warmup_epochs

    def masks(self, anchor_ids: torch.Tensor, candidate_ids: torch.Tensor, sims: torch.Tensor | None = None,
              support: SupportViews | None = None) -> torch.Tensor | None:
        """Detected pairs ``[1, B, M]`` (None in the warm-up); from the start epoch every call first learns from
        ``sims [B, M]``."""
        if sims is None:
            raise ValueError("detection.mode=threshold needs the anchor-candidate similarities")
        return self.thresholds.masks(anchor_ids, candidate_ids, sims, self.active,
                                     learn=self.epoch >= self.settings.threshold_start_epoch, epoch=self.epoch)

    def state_dict(self) -> dict[str, Any]:
        return {"thresholds": self.thresholds.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.thresholds.load_state_dict(state["thresholds"])
