"""``ifnd``: spherical k-means pseudo-labels at every granularity of ``detection.num_clusters``.

Each round clusters the training set's embeddings (an extra centre-crop pass, ``features: pass``,
or the embeddings stored during training, ``features: bank``), gives every sample a confidence,
and accepts only the most confident share; the share grows over training (``accept_start`` ->
``accept_end``). Only ``features: bank`` allocates and checkpoints the ``[N, D]`` bank. With
``detection.guard`` a level keeps its labels only where its label-free precision estimate clears
``detection.guard_min_precision`` (:mod:`ifnd.falseneg.guard`). After it, the removal cap
(``detection.max_removed_share``, :mod:`ifnd.falseneg.removal_cap`, on by default) withdraws a level that
would remove too large a share of every anchor's negatives. With ``detection.choose_k: silhouette``
each round picks its two levels from the features instead of ``num_clusters`` (:mod:`ifnd.falseneg.granularity`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ifnd.config import ConfigError
from ifnd.falseneg.acceptance import centroid_confidence, margin_confidence, softmax_confidence
from ifnd.falseneg.granularity import MIN_POINTS_PER_CLUSTER, choose_levels, usable_candidates
from ifnd.falseneg.label_round import cluster_levels, resolve_backend
from ifnd.falseneg.detectors.base import LossPolicy, RoundSchedule, TableDetector, detection_settings
from ifnd.falseneg.guard import GuardSettings, guard_detector_round
from ifnd.falseneg.removal_cap import cap_levels
from ifnd.runtime import distributed as dist

CONFIDENCES = {"margin": margin_confidence, "centroid": centroid_confidence}


def _no_confidence(x: torch.Tensor, centroids: torch.Tensor, assignments: torch.Tensor) -> torch.Tensor:
    """``[n]`` zeros: choosing k reads the assignments only."""
    return torch.zeros(len(x), device=x.device)


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
    kmeans_backend: str
    choose_k: str
    k_candidates: tuple[int, ...]
    k_sample: int

    @classmethod
    def from_config(cls, cfg: Any) -> "KMeansSettings":
        return detection_settings(cls, cfg, num_clusters=tuple(cfg.detection.num_clusters),
                                  k_candidates=tuple(cfg.detection.k_candidates))

    @property
    def num_levels(self) -> int:
        """Levels a round produces: two when k is chosen (``k`` and ``2 k``), else one per ``num_clusters``."""
        return 2 if self.choose_k == "silhouette" else len(self.num_clusters)


class IFNDDetector(TableDetector):
    """k-means rounds; one level per ``detection.num_clusters`` entry (or the two chosen levels).

    Args:
        policy, schedule, num_samples, true_labels: see :class:`TableDetector`.
        settings: the k-means settings.
        embed_dim: D, width of the bank's embeddings.
        guard: the precision guard's settings, or None (off).
        max_removed_share: the removal cap (1.0: none).
    """

    def __init__(self, policy: LossPolicy, schedule: RoundSchedule, settings: KMeansSettings, num_samples: int,
                 embed_dim: int, true_labels: torch.Tensor | None, guard: GuardSettings | None = None,
                 max_removed_share: float = 1.0):
        if settings.embedding == "backbone" and settings.features != "pass":
            raise ConfigError("detection.embedding=backbone needs detection.features=pass (the bank holds head outputs)")
        if settings.choose_k == "silhouette":
            if not usable_candidates(settings.k_candidates, min(settings.k_sample, num_samples)):
                raise ConfigError(f"detection.k_candidates={list(settings.k_candidates)}: none leaves {MIN_POINTS_PER_CLUSTER} of the "
                                  f"{min(settings.k_sample, num_samples)} sampled rows per cluster; add smaller ks "
                                  "or raise detection.k_sample")
        else:
            too_big = [k for k in settings.num_clusters if k > num_samples]
            if too_big:
                raise ConfigError(f"detection.num_clusters={list(settings.num_clusters)}: k={too_big} exceed the "
                                  f"{num_samples} training samples (k-means needs at least k points); lower them")
        super().__init__(policy, schedule, settings.num_levels, num_samples, true_labels)
        self.settings = settings
        self.needs_bank = settings.features == "bank"
        self.needs_pass_features = not self.needs_bank
        self.pass_embedding = settings.embedding
        self.bank = torch.zeros(num_samples, embed_dim) if self.needs_bank else None
        self.bank_filled = torch.zeros(num_samples, dtype=torch.bool) if self.needs_bank else None
        self.guard = guard
        self.max_removed_share = max_removed_share
        self.chosen: dict[str, float] = {}  # the last round's choice of k, for its report

    @classmethod
    def from_config(cls, cfg: Any, num_samples: int, embed_dim: int,
                    true_labels: torch.Tensor | None) -> "IFNDDetector":
        return cls(LossPolicy.from_config(cfg), RoundSchedule.from_config(cfg),
                   KMeansSettings.from_config(cfg), num_samples, embed_dim, true_labels,
                   GuardSettings.from_config(cfg, true_labels) if cfg.detection.guard else None,
                   cfg.detection.max_removed_share)

    @torch.no_grad()
    def observe(self, ids: torch.Tensor, embeddings: torch.Tensor) -> None:
        """Store training-pass embeddings ``[B, D]`` of samples ``ids [B]`` in the bank."""
        if self.bank is None:
            raise RuntimeError("detection.features=pass keeps no embedding bank")
        ids = ids.cpu()
        self.bank[ids] = embeddings.detach().float().cpu()
        self.bank_filled[ids] = True

    def kmeans_backend(self, device: torch.device) -> str:
        """``torch`` or ``faiss``: where k-means runs for features on ``device`` (``detection.kmeans_backend``)."""
        return resolve_backend(self.settings.kmeans_backend, device)

    def shards_rounds(self, device: torch.device) -> bool:
        """The torch backend runs on every rank over its own rows (no rank gathers the features)."""
        return self.kmeans_backend(device) == "torch"

    def check_run(self, device: torch.device, world_size: int) -> None:
        """The guard reads the whole round's features on one process: not with rounds sharded over ranks."""
        if self.guard is not None and world_size > 1 and self.shards_rounds(device):
            raise ConfigError("detection.guard reads the whole round's features on one process: with several "
                              "processes and the torch k-means backend, set detection.guard=false or "
                              "detection.kmeans_backend=faiss")

    def assign(self, epoch: int, features: torch.Tensor | None, ids: torch.Tensor | None = None,
               device: torch.device | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """k-means of ``features`` (``pass``: ``[N, D]`` in dataset order, or this rank's ``[n, D]`` of ``ids``
        with the torch backend), or of the bank, where samples never embedded yet (possible after the
        first epochs with ``drop_last``) stay unassigned; on the features' device (bank rows: ``device``)."""
        if features is None and self.bank is None:
            raise RuntimeError("detection.features=pass: run_round needs the features of the training set")
        if features is None and not self.bank_filled.any():
            raise RuntimeError("the embedding bank is empty: train at least one epoch before the first round")
        s = self.settings
        backend = self.kmeans_backend(features.device if features is not None else device or torch.device("cpu"))
        sharded = backend == "torch" and dist.world_size() > 1
        if features is None:
            ids = self.bank_filled.nonzero().squeeze(1)
            ids = ids[dist.rank()::dist.world_size()] if sharded else ids
            features = self.bank[ids].to(device or "cpu")
        features = features.float()
        ids = torch.arange(len(features)) if ids is None else ids
        seed = self.schedule.seed + epoch
        ks = self._choose_levels(features, seed, backend, sharded) if s.choose_k == "silhouette" else s.num_clusters
        levels = cluster_levels(features, ids, self.labels.shape[1], ks, self._confidence, backend=backend,
                                hierarchical=s.hierarchical, niter=s.kmeans_niter, nredo=s.kmeans_nredo,
                                seed=seed, init=s.kmeans_init, sharded=sharded)
        self.centroids = [level.centroids for level in levels]
        return [level.assignments for level in levels], [level.confidence for level in levels]

    def _choose_levels(self, features: torch.Tensor, seed: int, backend: str, sharded: bool) -> tuple[int, int]:
        """The round's two ks, chosen by silhouette on a sample of ``features [n, D]`` (this rank's when
        ``sharded``), clustered by the round's own backend; notes the choice for the round's report."""
        s = self.settings

        def cluster(sample: torch.Tensor, ks: Sequence[int]) -> list[torch.Tensor]:
            rows = torch.arange(len(sample), device=sample.device)
            return [level.assignments for level in cluster_levels(
                sample, rows, len(sample), ks, _no_confidence, backend=backend, niter=s.kmeans_niter,
                nredo=s.kmeans_nredo, seed=seed, init=s.kmeans_init)]

        ks, scores = choose_levels(features, s.k_candidates, s.k_sample, seed, sharded, cluster)
        self.chosen = {"chosen_k": float(ks[0]), "chosen_k/silhouette": scores[ks[0]]}
        return ks

    def review(self, epoch: int, features: torch.Tensor | None, assignments: list[torch.Tensor],
               previous: torch.Tensor | None) -> dict[str, float]:
        """The chosen k (with ``choose_k``); the guard, when on: signals and estimated precision per level on
        the round's ``features [N, D]`` (None: the bank, whose never-embedded rows are unassigned and not read);
        then the removal cap, unless ``max_removed_share`` is 1.0. Withdrawn levels lose their labels.
        :meth:`check_run` has refused guarded rounds sharded over ranks, so every row is here; the cap reads
        only the table, which every rank holds whole."""
        report = dict(self.chosen)
        if self.guard is not None:
            features = (self.bank if features is None else features).float()
            guarded, guard_report = guard_detector_round(self.guard, epoch, features, assignments, self.labels,
                                                         self.centroids, previous)
            self.labels.copy_(guarded)
            report.update(guard_report)
        if self.max_removed_share < 1.0:
            capped, cap_report = cap_levels(self.labels, self.max_removed_share)
            self.labels.copy_(capped)
            report.update(cap_report)
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
