"""``fnc``: FNC's support views (Huynh et al., WACV 2022; code: google-research/fnc). No table and no
rounds: each step, a candidate is flagged for an anchor when it is among the anchor's
``detection.fnc_top_k`` best scores and its score exceeds ``detection.fnc_threshold``, a score being
its largest similarity to any view of the anchor's image (its two training views and
``detection.fnc_support_views`` support views; :mod:`ifnd.falseneg.fnc`); detecting once
``detection.warmup_epochs`` have passed. SimCLR scores the model's views against the batch's; MoCo, as
FNC's memory version, the momentum encoder's views against the queue."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ifnd.config import ConfigError
from ifnd.falseneg.detectors.base import Detector, LossPolicy, SupportViews, detection_settings
from ifnd.falseneg.fnc import support_false_negatives, support_scores


@dataclass(frozen=True)
class FNCSettings:
    """The ``detection.*`` keys of the FNC detector."""

    warmup_epochs: int
    fnc_support_views: int
    fnc_top_k: int
    fnc_threshold: float


class FNCDetector(Detector):
    """Per-step masks from the support views' embeddings (:class:`~ifnd.falseneg.detectors.base.SupportViews`).

    Args:
        policy: see :class:`~ifnd.falseneg.detectors.base.Detector`.
        settings: warm-up, support views, top-k and threshold.
    """

    def __init__(self, policy: LossPolicy, settings: FNCSettings):
        super().__init__(policy)
        if settings.fnc_support_views < 1:
            raise ConfigError(f"detection.fnc_support_views={settings.fnc_support_views}: detection.mode=fnc needs "
                              "at least 1 support view per image")
        if settings.fnc_top_k < 0 or (settings.fnc_top_k == 0 and settings.fnc_threshold <= -1):
            raise ConfigError(f"detection.fnc_top_k={settings.fnc_top_k} with detection.fnc_threshold="
                              f"{settings.fnc_threshold} flags every candidate: set fnc_top_k > 0 or a threshold "
                              "above -1")
        self.settings = settings
        self.support_views = settings.fnc_support_views

    @classmethod
    def from_config(cls, cfg: Any, num_samples: int, embed_dim: int,
                    true_labels: torch.Tensor | None) -> "FNCDetector":
        return cls(LossPolicy.from_config(cfg), detection_settings(FNCSettings, cfg))

    @property
    def active(self) -> bool:
        """Once the warm-up is over."""
        return self.epoch >= self.settings.warmup_epochs

    def masks(self, anchor_ids: torch.Tensor, candidate_ids: torch.Tensor, sims: torch.Tensor | None = None,
              support: SupportViews | None = None) -> torch.Tensor | None:
        """Detected pairs ``[1, B, M]`` (None in the warm-up); the candidates of the anchor's own image and
        empty slots (id below 0) are never flagged."""
        if not self.active:
            return None
        if support is None:
            raise ValueError("detection.mode=fnc needs the support views' embeddings at every step")
        own = (candidate_ids[None, :] == anchor_ids[:, None]) | (candidate_ids[None, :] < 0)
        scores = support_scores(support.anchors.float(), support.candidates.float())
        threshold = self.settings.fnc_threshold if self.settings.fnc_threshold > -1 else None
        return support_false_negatives(scores, own, self.settings.fnc_top_k, threshold)[None]
