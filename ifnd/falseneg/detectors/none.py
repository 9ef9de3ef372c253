"""``none``: no detection; the loss sees no false negatives (the baseline)."""

from __future__ import annotations

from typing import Any

import torch

from ifnd.falseneg.detectors.base import Detector, LossPolicy


class NoDetector(Detector):
    """Detects nothing, never wants a round, keeps no state."""

    @classmethod
    def from_config(cls, cfg: Any, num_samples: int, embed_dim: int, true_labels: torch.Tensor | None) -> "NoDetector":
        return cls(LossPolicy.from_config(cfg))
