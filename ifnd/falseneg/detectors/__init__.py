"""False-negative detectors, one class per ``detection.mode``, built by :func:`build_detector`.

Adding a mode: one file with a :class:`~ifnd.falseneg.detectors.base.Detector` subclass (its
``from_config(cfg, num_samples, embed_dim, true_labels)`` reads its own keys), one line in :data:`DETECTORS`,
and its ``detection.*`` keys (and the mode's name) documented in :mod:`ifnd.config`.
"""

from __future__ import annotations

from typing import Any

import torch

from ifnd.config import ConfigError
from ifnd.falseneg.detectors.base import Detector, SupportViews
from ifnd.falseneg.detectors.fnc import FNCDetector
from ifnd.falseneg.detectors.ifnd import IFNDDetector
from ifnd.falseneg.detectors.none import NoDetector
from ifnd.falseneg.detectors.oracle import NoisyOracleDetector, OracleDetector
from ifnd.falseneg.detectors.threshold import ThresholdDetector

DETECTORS: dict[str, type[Detector]] = {
    "none": NoDetector,
    "ifnd": IFNDDetector,
    "oracle": OracleDetector,
    "noisy_oracle": NoisyOracleDetector,
    "threshold": ThresholdDetector,
    "fnc": FNCDetector,
}


def build_detector(cfg: Any, num_samples: int, embed_dim: int, true_labels: torch.Tensor | None) -> Detector:
    """The detector of ``cfg.detection.mode`` for a training set of ``num_samples``.

    Args:
        embed_dim: D, width of the embeddings a bank would hold.
        true_labels: ``[N]`` long, for the oracles and the diagnostics; may be None.
    """
    mode = cfg.detection.mode
    if mode not in DETECTORS:
        raise ConfigError(f"detection.mode={mode!r} is not a detector; choose one of {', '.join(DETECTORS)}")
    detector = DETECTORS[mode].from_config(cfg, num_samples, embed_dim, true_labels)
    detector.restrict_pairs(cfg.detection.keep_pairs, true_labels)
    return detector


__all__ = ["DETECTORS", "Detector", "SupportViews", "build_detector"]
