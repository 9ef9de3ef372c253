"""``ifnd``: spherical k-means pseudo-labels at every granularity of ``detection.num_clusters``.

Each round clusters the training set's embeddings (an extra centre-crop pass, ``features: pass``,
or the embeddings stored during training, ``features: bank``), gives every sample a confidence,
and accepts only the most confident share; the share grows over training (``accept_start`` ->
``accept_end``). Only ``features: bank`` allocates and checkpoints the ``[N, D]`` bank. With
``detection.guard`` a level keeps its labels only where its label-free precision estimate clears
``detection.guard_min_precision`` (:mod:`ifnd.falseneg.guard`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ifnd.config import ConfigError
from ifnd.falseneg.acceptance import centroid_confidence, margin_confidence, softmax_confidence
from ifnd.falseneg.clustering import multi_level_kmeans
from ifnd.falseneg.detectors.base import LossPolicy, RoundSchedule, TableDetector, detection_settings
from ifnd.falseneg.guard import GuardSettings, guard_detector_round

CONFIDENCES = {"margin": margin_confidence, "centroid": centroid_confidence}


@dataclass(frozen=True)
class KMeansSettings:
    """The ``detection.*`` keys of the k-means rounds (meanings: ``python -m ifnd config --defaults``)."""

    features: str
    embedding: str
    num_clusters: tuple[int, ...]
    hierarchical: bool
    confidence: str
    confidence_temperature: float
    kmeans_niter: int
    kmeans_nredo: int
    kmeans_init: str

    @classmethod
    def from_config(cls, cfg: Any) -> "KMeansSettings":
        return detection_settings(cls, cfg, num_clusters=tuple(cfg.detection.num_clusters))


class IFNDDetector(TableDetector):
    """k-means rounds; one level per ``detection.num_clusters`` entry.

    Args:
        policy, schedule, num_samples, true_labels: see :class:`TableDetector`.
        settings: the k-means settings.
        embed_dim: D, width of the bank's embeddings.
    """

    def __init__(self, policy: LossPolicy, schedule: RoundSchedule, settings: KMeansSettings, num_samples: int,
                 embed_dim: int, true_labels: torch.Tensor | None, guard: GuardSettings | None = None):
        if settings.embedding == "backbone" and settings.features != "pass":
            raise ConfigError("detection.embedding=backbone needs detection.features=pass (the bank holds head outputs)")
        too_big = [k for k in settings.num_clusters if k > num_samples]
        if too_big:
            raise ConfigError(f"detection.num_clusters={list(settings.num_clusters)}: k={too_big} exceed the "
                              f"{num_samples} training samples (k-means needs at least k points); lower them")
        super().__init__(policy, schedule, len(settings.num_clusters), num_samples, true_labels)
        self.settings = settings
        self.needs_bank = settings.features == "bank"
        self.needs_pass_features = not self.needs_bank
        self.pass_embedding = settings.embedding
        self.bank = torch.zeros(num_samples, embed_dim) if self.needs_bank else None
        self.bank_filled = torch.zeros(num_samples, dtype=torch.bool) if self.needs_bank else None
        self.guard = guard
        self._round_features: torch.Tensor | None = None  # the round's clustered features, for the guard

    @classmethod
    def from_config(cls, cfg: Any, num_samples: int, embed_dim: int,
                    true_labels: torch.Tensor | None) -> "IFNDDetector":
        return cls(LossPolicy.from_config(cfg), RoundSchedule.from_config(cfg),
                   KMeansSettings.from_config(cfg), num_samples, embed_dim, true_labels,
                   GuardSettings.from_config(cfg) if cfg.detection.guard else None)

    @torch.no_grad()
    def observe(self, ids: torch.Tensor, embeddings: torch.Tensor) -> None:
        """Store training-pass embeddings ``[B, D]`` of samples ``ids [B]`` in the bank."""
        if self.bank is None:
            raise RuntimeError("detection.features=pass keeps no embedding bank")
        ids = ids.cpu()
        self.bank[ids] = embeddings.detach().float().cpu()
        self.bank_filled[ids] = True

    def assign(self, epoch: int, features: torch.Tensor | None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """k-means of ``features [N, D]`` (``pass``), or of the bank, where samples never embedded yet
        (possible after the first epochs with ``drop_last``) stay unassigned."""
        if features is None and self.bank is None:
            raise RuntimeError("detection.features=pass: run_round needs the features of the training set")
        if features is None and not self.bank_filled.any():
            raise RuntimeError("the embedding bank is empty: train at least one epoch before the first round")
        x = (features if features is not None else self.bank).float()
        self._round_features = x
        seen = torch.ones(len(x), dtype=torch.bool) if features is not None else self.bank_filled
        s = self.settings
        results = multi_level_kmeans(x[seen].numpy(), s.num_clusters, hierarchical=s.hierarchical, niter=s.kmeans_niter,
                                     nredo=s.kmeans_nredo, seed=self.schedule.seed + epoch, init=s.kmeans_init)
        self.centroids = [torch.from_numpy(r.centroids) for r in results]
        assignments, confidences = [], []
        for result, centroids in zip(results, self.centroids):
            assign = torch.full((len(x),), -1, dtype=torch.long)
            assign[seen] = torch.from_numpy(result.assignments).long()
            conf = torch.full((len(x),), -1.0)  # below every real confidence: never accepted first
            conf[seen] = self._confidence(x[seen], centroids, assign[seen])
            assignments.append(assign)
            confidences.append(conf)
        return assignments, confidences

    def review(self, epoch: int, assignments: list[torch.Tensor], previous: torch.Tensor | None) -> dict[str, float]:
        """The guard, when on: signals and estimated precision per level; abstaining levels lose their labels."""
        features, self._round_features = self._round_features, None
        if self.guard is None:
            return {}
        guarded, report = guard_detector_round(self.guard, epoch, features, assignments, self.labels, self.centroids,
                                               previous)
        self.labels.copy_(guarded)
        return report

    def _confidence(self, x: torch.Tensor, centroids: torch.Tensor, assignments: torch.Tensor) -> torch.Tensor:
        if self.settings.confidence == "softmax":
            return softmax_confidence(x, centroids, assignments, self.settings.confidence_temperature)
        return CONFIDENCES[self.settings.confidence](x, centroids, assignments)

    def state_dict(self) -> dict[str, Any]:
        """The table, and the bank with ``features: bank``."""
        bank = {"bank": self.bank, "bank_filled": self.bank_filled} if self.bank is not None else {}
        return {**self.table_state(), **bank}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.load_table(state)
        if self.bank is None:
            return
        if state["bank"].shape != self.bank.shape:
            raise ValueError(f"detector bank has shape {tuple(state['bank'].shape)}, expected {tuple(self.bank.shape)}")
        self.bank.copy_(state["bank"])
        self.bank_filled.copy_(state["bank_filled"])
