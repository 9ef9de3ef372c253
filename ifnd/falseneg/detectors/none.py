"""``none``: no detection; the loss sees no false negatives (the baseline)."""

from __future__ import annotations

from ifnd.falseneg.detectors.base import Detector


class NoDetector(Detector):
    """Detects nothing, never wants a round, keeps no state: the :class:`Detector` defaults."""
