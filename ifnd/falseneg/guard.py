"""The guard: keep a level's pseudo-labels only where its estimated pair precision clears a threshold.

Every level of a round gets its label-free signals (:func:`~ifnd.falseneg.reliability.level_signals`);
the precision estimator (:class:`~ifnd.falseneg.precision_estimate.PrecisionEstimator`) turns them into
an estimated pair precision of the level's accepted table, and a level below ``min_precision``
abstains (no pseudo-label: its pairs stay negatives), the round when every level does. With
``choose_k`` only the clearing level that keeps the most pairs stays: k is chosen from the signals
among the candidate levels.

With a labelled subset (``detection.guard_labelled_share``, :mod:`ifnd.falseneg.labelled_precision`)
a level's estimate is instead the pair precision of its table among the labelled samples, counted,
not predicted; the signals are still computed and logged.

The estimate is per level, not per cluster: on hand-made points a cluster that follows a nuisance
factor (one font of every class) can be as stable and as well separated as a class cluster; the
level's signals see the clusters the nuisance had to split. Per-cluster estimates are not calibrated.

``min_precision`` belongs at the break-even precision of the noise map (below it removing the
detected pairs hurts more than it helps); ``detection.guard_min_precision`` defaults to 0.4, above
the precision at which removal lost on H1 (0.3); the break-even depends on the setting (on the pilot
nothing down to 0.1 loses measurably).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ifnd.config import ConfigError
from ifnd.falseneg.labelled_precision import LabelledSubset
from ifnd.falseneg.precision_estimate import ESTIMATOR_FILE, PrecisionEstimator
from ifnd.falseneg.reliability import cluster_sizes, level_signals, ordered_pairs, pair_agreement, restart_assignments
from ifnd.runtime.seeding import generator as seeded_generator


@dataclass(frozen=True)
class GuardLevel:
    """One level of a clustering round, as the guard sees it.

    Attributes:
        accepted: ``[N]`` long, the accepted pseudo-labels in ``[0, K)`` (-1: not accepted).
        centroids: ``[K, D]`` float.
        restart: ``[N]`` long, an independent k-means restart on a subsample
            (:func:`~ifnd.falseneg.reliability.restart_assignments`; -1 outside it).
    """

    accepted: torch.Tensor
    centroids: torch.Tensor
    restart: torch.Tensor


def guard_round(features: torch.Tensor, levels: Sequence[GuardLevel], estimator: PrecisionEstimator,
                min_precision: float, choose_k: bool = False, generator: torch.Generator | None = None,
                previous: Sequence[torch.Tensor] | None = None,
                labelled: LabelledSubset | None = None) -> tuple[list[torch.Tensor], dict[str, float]]:
    """Drop the pseudo-labels of the levels whose estimated pair precision is below ``min_precision``.

    Args:
        features: ``[N, D]`` float embeddings the levels clustered.
        levels: the round's levels.
        estimator: reads the signals of :func:`~ifnd.falseneg.reliability.level_signals`.
        min_precision: the threshold, in [0, 1].
        choose_k: keep only the level that keeps the most pairs (the others abstain).
        generator: the pair-sampling stream.
        previous: the previous round's accepted labels per level (``[N]`` each), for the logged
            ``sig_round_agreement``; None at the first round.
        labelled: when given, a level's estimate is its pair precision among these labelled samples
            (``level{l}/est_pairs``: how many of their pairs it judged) instead of ``estimator``'s.

    Returns:
        ``(labels, report)``: per level the ``[N]`` long labels after the guard, and the report:
        ``level{l}/sig_<signal>`` (level values; also ``sig_level_agreement`` with the next level and
        ``sig_round_agreement`` with the previous round, logged only), ``level{l}/est_precision`` (the
        estimated pair precision of the level's accepted table), ``level{l}/guard_abstain``,
        ``guard_abstain`` (1.0 when every level abstains) and, with ``choose_k``, ``guard_chosen_level``.
    """
    if not 0.0 <= min_precision <= 1.0:
        raise ValueError(f"detection.guard_min_precision must lie in [0, 1], got {min_precision}")
    report: dict[str, float] = {}
    guarded, kept_pairs = [], []
    for index, level in enumerate(levels):
        signals = level_signals(features, level.accepted, level.centroids, level.restart, generator)
        sub = level.restart >= 0  # the logged agreements, on the restart's subsample too: O(M log M)
        if len(levels) > 1:
            signals["level_agreement"] = pair_agreement(level.accepted[sub],
                                                        levels[(index + 1) % len(levels)].accepted[sub], generator)
        if previous is not None:
            signals["round_agreement"] = pair_agreement(level.accepted[sub], previous[index][sub], generator)
        if labelled is None:
            estimate = float(estimator.predict(signals))
        else:
            estimate, pairs = labelled.pair_precision(level.accepted)
            report[f"level{index}/est_pairs"] = float(pairs)
        clears = estimate >= min_precision  # NaN (no pair to judge) never clears
        guarded.append(level.accepted if clears else torch.full_like(level.accepted, -1))
        kept_pairs.append(float(ordered_pairs(cluster_sizes(level.accepted, len(level.centroids))).sum()) if clears else 0.0)
        report.update({f"level{index}/sig_{name}": value for name, value in signals.items()})
        report[f"level{index}/est_precision"] = estimate
    if choose_k and any(kept_pairs):
        chosen = max(range(len(levels)), key=lambda i: kept_pairs[i])
        guarded = [g if i == chosen else torch.full_like(g, -1) for i, g in enumerate(guarded)]
        kept_pairs = [p if i == chosen else 0.0 for i, p in enumerate(kept_pairs)]
        report["guard_chosen_level"] = float(chosen)
    for index, pairs_kept in enumerate(kept_pairs):
        report[f"level{index}/guard_abstain"] = float(pairs_kept == 0)
    report["guard_abstain"] = float(not any(kept_pairs))
    return guarded, report


@dataclass(frozen=True)
class GuardSettings:
    """The ``detection.guard*`` keys (``python -m ifnd config --defaults``) and what a round needs beside them."""

    min_precision: float
    choose_k: bool
    points_per_cluster: int
    estimator: PrecisionEstimator
    kmeans_niter: int
    kmeans_nredo: int
    seed: int
    labelled: LabelledSubset | None = None

    @classmethod
    def from_config(cls, cfg: Any, true_labels: torch.Tensor | None) -> "GuardSettings":
        """From ``detection.guard_*`` (their ranges checked when the config loads), ``detection.kmeans_niter`` /
        ``kmeans_nredo`` and the run's ``seed``; ``true_labels [N]`` (or None) give the labelled subset when
        ``detection.guard_labelled_share`` is above 0."""
        det = cfg.detection
        try:
            estimator = PrecisionEstimator.load(det.guard_estimator or ESTIMATOR_FILE)
        except (FileNotFoundError, ValueError) as err:
            raise ConfigError(f"detection.guard_estimator: {err}") from err
        labelled = None
        if det.guard_labelled_share > 0:
            if true_labels is None:
                raise ConfigError("detection.guard_labelled_share needs the training set's class labels and this "
                                  "data set has none; set it to 0 (the label-free estimator)")
            labelled = LabelledSubset.draw(true_labels, det.guard_labelled_share, cfg.seed)
        return cls(det.guard_min_precision, det.guard_choose_k, det.guard_points_per_cluster, estimator,
                   det.kmeans_niter, det.kmeans_nredo, cfg.seed, labelled)


def guard_detector_round(settings: GuardSettings, epoch: int, features: torch.Tensor,
                         assignments: Sequence[torch.Tensor], accepted: torch.Tensor,
                         centroids: Sequence[torch.Tensor],
                         previous: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, float]]:
    """The detector's hook: restarts, signals and :func:`guard_round` for one round.

    Args:
        epoch: the round's epoch (seeds the restarts and pair draws with ``settings.seed``).
        features: ``[N, D]`` embeddings of the round (rows of unassigned samples are never read).
        assignments: per level ``[N]`` long k-means assignments (-1: not embedded).
        accepted: ``[L, N]`` long, the accepted table.
        centroids: per level ``[K_l, D]``.
        previous: ``[L, N]`` the previous round's table, or None at the first round.

    Returns:
        ``([L, N]`` guarded table, report of :func:`guard_round` with ``guard_time_s``, its cost).
    """
    start = time.perf_counter()
    stream = seeded_generator(settings.seed, "guard", epoch)
    levels = [GuardLevel(accepted[i], c, restart_assignments(features, a, len(c), settings.points_per_cluster,
                                                             settings.kmeans_niter, stream, settings.kmeans_nredo))
              for i, (a, c) in enumerate(zip(assignments, centroids))]
    labels, report = guard_round(features, levels, settings.estimator, settings.min_precision, settings.choose_k,
                                 stream, None if previous is None else list(previous), settings.labelled)
    report["guard_time_s"] = time.perf_counter() - start
    return torch.stack(labels), report
