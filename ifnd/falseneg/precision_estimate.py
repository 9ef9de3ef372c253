"""Pair precision estimated from reliability signals: a logistic model on one or two signals.

``estimate = sigmoid(intercept + sum_i weight_i * signal_i)``, monotone in each signal (in the
direction of its weight's sign). Fitted by ``tools/calibrate_reliability.py`` against the true pair
precision of accepted tables of finished runs, and stored as a few numbers in
``configs/reliability/estimator.yaml`` (with the command that fitted it and what it was fitted on).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import yaml
from scipy.stats import spearmanr

ESTIMATOR_FILE = Path(__file__).resolve().parents[2] / "configs" / "reliability" / "estimator.yaml"
"""The committed estimator (:meth:`PrecisionEstimator.load` without a path)."""


@dataclass(frozen=True)
class PrecisionEstimator:
    """A logistic model of pair precision on named signals.

    Attributes:
        signals: names of the signals it reads (keys of :mod:`ifnd.falseneg.reliability`'s signal dicts).
        weights: one weight per signal.
        intercept: the bias.
        notes: provenance (fitting command, data, measured rank correlations); not used to predict.
    """

    signals: tuple[str, ...]
    weights: tuple[float, ...]
    intercept: float
    notes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.signals) != len(self.weights) or not self.signals:
            raise ValueError(f"the estimator needs one weight per signal, got {self.signals} and {self.weights}")

    def predict(self, values: Mapping[str, torch.Tensor | float]) -> torch.Tensor:
        """Estimated pair precision in (0, 1), of the shape of the signals (scalars or ``[K]`` per cluster).

        A missing signal is an error; a NaN signal gives a NaN estimate (the guard treats NaN as not clearing)."""
        missing = [name for name in self.signals if name not in values]
        if missing:
            raise KeyError(f"the precision estimator needs signals {missing}; have {sorted(values)}")
        logit = torch.as_tensor(self.intercept, dtype=torch.float64)
        for name, weight in zip(self.signals, self.weights):
            logit = logit + weight * torch.as_tensor(values[name], dtype=torch.float64)
        return torch.sigmoid(logit)

    @classmethod
    def fit(cls, signals: Mapping[str, torch.Tensor], precision: torch.Tensor, steps: int = 500,
            notes: dict[str, Any] | None = None) -> "PrecisionEstimator":
        """Least cross-entropy logistic fit with soft targets.

        Args:
            signals: name -> ``[P]`` values at P calibration points (no NaN).
            precision: ``[P]`` true pair precision of each point, in [0, 1].
            steps: L-BFGS iterations.
        """
        names = tuple(signals)
        x = torch.stack([torch.as_tensor(signals[n], dtype=torch.float64) for n in names], dim=1)
        y = torch.as_tensor(precision, dtype=torch.float64).clamp(1e-4, 1 - 1e-4)
        if torch.isnan(x).any() or torch.isnan(y).any():
            raise ValueError("calibration points contain NaN signals or precisions; drop them before fitting")
        mean, std = x.mean(0), x.std(0).clamp(min=1e-8) if len(x) > 1 else torch.ones(x.shape[1], dtype=torch.float64)
        z = (x - mean) / std
        w = torch.zeros(x.shape[1] + 1, dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([w], max_iter=steps, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(w[0] + z @ w[1:], y)
            loss.backward()
            return loss

        optimizer.step(closure)
        scaled = (w[1:] / std).detach()
        intercept = float(w[0].detach() - (scaled * mean).sum())
        return cls(names, tuple(float(v) for v in scaled), intercept, dict(notes or {}))

    def save(self, path: str | Path) -> None:
        data = {"signals": list(self.signals), "weights": list(self.weights), "intercept": self.intercept,
                "notes": self.notes}
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(yaml.safe_dump(data, sort_keys=False))

    @classmethod
    def load(cls, path: str | Path = ESTIMATOR_FILE) -> "PrecisionEstimator":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no precision estimator at {path}; fit one with tools/calibrate_reliability.py")
        data = yaml.safe_load(path.read_text()) or {}
        try:
            return cls(tuple(data["signals"]), tuple(float(v) for v in data["weights"]), float(data["intercept"]),
                       dict(data.get("notes") or {}))
        except (KeyError, TypeError) as err:
            raise ValueError(f"{path}: needs signals, weights and intercept ({err}); refit it with "
                             "tools/calibrate_reliability.py") from err


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two ``[P]`` vectors (scipy's, average ranks for ties); NaN when either is
    constant or P < 3, and pairs with a NaN are left out."""
    a, b = torch.as_tensor(a, dtype=torch.float64).numpy(), torch.as_tensor(b, dtype=torch.float64).numpy()
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:  # scipy would warn and return NaN
        return math.nan
    return float(spearmanr(a, b).statistic)

