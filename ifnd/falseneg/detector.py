"""IFND rounds: embeddings of the training set -> a table of accepted pseudo-labels.

The training loop hands the detector embeddings and dataset ids and asks it for
false-negative masks; the detector never reaches into the loop. Its whole state (label
table, confidences, centroids, the embedding bank, the round counter) is in
:meth:`state_dict`, so a resumed run neither reclusters early nor loses labels.

Modes (``detection.mode``):

* ``none``   — no table; the loss sees no false negatives (the baseline).
* ``ifnd``   — spherical k-means at every granularity of ``num_clusters``, a
  confidence per sample, and only the most confident share accepted; the share grows
  over training (``accept_start`` -> ``accept_end``).
* ``oracle`` — the true classes as pseudo-labels. ``detection.oracle: full``: every label
  from the first step (the upper bound of false-negative removal); ``scheduled``: accepted
  by IFND's schedule over a random subset drawn with the run's seed (perfect precision at
  IFND's schedule).
* ``threshold`` — no table: a learned similarity threshold per anchor
  (:class:`~ifnd.falseneg.threshold.AnchorThresholds`), active after the warm-up.
* ``noisy_oracle`` — the oracle's pairs degraded to a chosen pair precision and recall
  (:func:`~ifnd.falseneg.masks.noisy_oracle_mask`): where detection must be to gain anything.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch

from ifnd.config import ConfigError
from ifnd.runtime import distributed as dist
from ifnd.runtime.seeding import generator
from ifnd.falseneg.acceptance import (
    accept_most_confident,
    centroid_confidence,
    accepted_share,
    margin_confidence,
    softmax_confidence,
)
from ifnd.falseneg.label_round import cluster_levels, resolve_backend
from ifnd.falseneg.diagnostics import nmi, purity, table_pair_counts
from ifnd.falseneg.threshold import AnchorThresholds
from ifnd.falseneg.masks import false_negative_mask, noisy_oracle_mask, partner_classes


@dataclass(frozen=True)
class DetectionSettings:
    """The ``detection.*`` keys (their defaults and meanings: ``python -m ifnd config --defaults``), the run
    length and seed."""

    mode: str
    features: str
    num_clusters: tuple[int, ...]
    hierarchical: bool
    warmup_epochs: int
    cluster_every: int
    accept_start: float
    accept_end: float
    accept_schedule: str
    confidence: str
    confidence_temperature: float
    kmeans_niter: int
    kmeans_nredo: int
    kmeans_init: str
    kmeans_backend: str
    accept_per: str
    threshold_quantile: float
    threshold_lr: float
    embedding: str
    oracle: str
    oracle_precision: float
    oracle_recall: float
    total_epochs: int
    seed: int

    @classmethod
    def from_config(cls, cfg: Any) -> "DetectionSettings":
        """``cfg.detection`` plus ``cfg.train.epochs`` and ``cfg.seed``."""
        names = {f.name for f in fields(cls)} - {"total_epochs", "seed"}
        values = {name: cfg.get(f"detection.{name}") for name in names}
        values["num_clusters"] = tuple(values["num_clusters"])
        return cls(**values, total_epochs=cfg.train.epochs, seed=cfg.seed)


class FalseNegativeDetector:
    """Keeps the pseudo-label table ``labels [L, N]`` (-1 = not accepted).

    Args:
        settings: what to detect and when (:class:`DetectionSettings`).
        num_samples: N, size of the training set.
        embed_dim: width of the embeddings that are clustered.
        true_labels: ``[N]`` long, for the oracle and diagnostics only; may be None.
    """

    def __init__(self, settings: DetectionSettings, num_samples: int, embed_dim: int, true_labels: torch.Tensor | None):
        self.det = settings
        self.mode = settings.mode
        self.total_epochs = settings.total_epochs
        self.seed = settings.seed
        self.true_labels = true_labels
        if self.uses_true_labels and true_labels is None:
            raise ConfigError(f"detection.mode={self.mode} needs true labels, and this data set has none")
        levels = 1 if self.uses_true_labels or self.mode == "threshold" else len(settings.num_clusters)
        too_big = [k for k in settings.num_clusters if k > num_samples]
        if self.mode == "ifnd" and settings.embedding == "backbone" and settings.features != "pass":
            raise ConfigError("detection.embedding=backbone needs detection.features=pass (the bank holds head outputs)")
        if self.mode == "ifnd" and too_big:
            raise ConfigError(f"detection.num_clusters {too_big} exceed the {num_samples} training samples; lower them")
        self.labels = torch.full((levels, num_samples), -1, dtype=torch.long)
        self.confidence = torch.zeros(levels, num_samples)
        self.centroids: list[torch.Tensor] = []
        self.bank = torch.zeros(num_samples, embed_dim)
        self.bank_filled = torch.zeros(num_samples, dtype=torch.bool)
        self.last_round = -1
        self.share = 0.0
        self._device_labels: torch.Tensor | None = None  # the table on the training device, once per round
        self.epoch = 0
        self.thresholds = AnchorThresholds(num_samples, settings.threshold_quantile, settings.threshold_lr) \
            if self.mode == "threshold" else None
        self.partners, self.false_rate = torch.zeros(0, 0, dtype=torch.bool), 0.0
        if self.mode == "noisy_oracle":
            try:
                self.partners, self.false_rate = partner_classes(true_labels, settings.oracle_precision,
                                                                 settings.oracle_recall, settings.seed)
            except ValueError as err:
                raise ConfigError(f"detection.oracle_precision / oracle_recall: {err}") from err

    @classmethod
    def from_config(cls, cfg: Any, num_samples: int, embed_dim: int,
                    true_labels: torch.Tensor | None) -> "FalseNegativeDetector":
        """The detector of ``cfg.detection`` for a training set of ``num_samples``."""
        return cls(DetectionSettings.from_config(cfg), num_samples, embed_dim, true_labels)

    @property
    def enabled(self) -> bool:
        return self.mode != "none"

    @property
    def uses_true_labels(self) -> bool:
        """The oracle modes: pseudo-labels are the true classes."""
        return self.mode in ("oracle", "noisy_oracle")

    @property
    def full_oracle(self) -> bool:
        """Every true label from the first step: one round before epoch 0, share 1.0."""
        return self.uses_true_labels and self.det.oracle == "full"

    @property
    def active(self) -> bool:
        """True once a round has produced a table the loss should use (threshold: once the warm-up is over)."""
        if self.thresholds is not None:
            return self.epoch >= self.det.warmup_epochs
        return self.enabled and self.last_round >= 0

    @property
    def needs_similarities(self) -> bool:
        """Whether :meth:`masks` needs the anchor-candidate similarities (the threshold detector)."""
        return self.thresholds is not None

    def start_epoch(self, epoch: int) -> None:
        """The training epoch that begins (the threshold detector's warm-up depends on it)."""
        self.epoch = epoch

    def wants_round(self, epoch: int) -> bool:
        """Whether a clustering round belongs before training epoch ``epoch`` (0-based)."""
        if self.full_oracle:
            return self.last_round < 0
        if self.thresholds is not None:
            return False
        since = epoch - self.det.warmup_epochs
        return self.enabled and since >= 0 and since % self.det.cluster_every == 0 and epoch > self.last_round

    def needs_bank(self) -> bool:
        return self.mode == "ifnd" and self.det.features == "bank"

    @torch.no_grad()
    def observe(self, ids: torch.Tensor, embeddings: torch.Tensor) -> None:
        """Store training-pass embeddings ``[B, D]`` of samples ``ids [B]`` (``bank`` features)."""
        ids = ids.cpu()
        self.bank[ids] = embeddings.detach().float().cpu()
        self.bank_filled[ids] = True

    def kmeans_backend(self, device: torch.device) -> str:
        """``torch`` or ``faiss``: where k-means runs for features on ``device`` (``detection.kmeans_backend``)."""
        return resolve_backend(self.det.kmeans_backend, device)

    def run_round(self, epoch: int, features: torch.Tensor | None = None, ids: torch.Tensor | None = None,
                  device: torch.device | None = None) -> dict[str, float]:
        """Recompute the label table before epoch ``epoch``.

        With the torch backend and several ranks every rank calls this with its own shard and
        ends with the same table; otherwise one process does, with every row.

        Args:
            features: ``[n, D]`` embeddings (``pass``) of dataset ids ``ids [n]`` (None: ``features``
                is the whole training set in order); None uses the bank, where samples never
                embedded yet (possible after the first epochs with ``drop_last``) stay
                unlabelled. Ignored in oracle mode.
            device: where the bank rows are clustered (default: the CPU).

        Returns:
            Round statistics: accepted share, and per level NMI / purity / pair
            precision and recall when true labels exist.
        """
        self.share = 1.0 if self.full_oracle else accepted_share(
            epoch, self.det.warmup_epochs, self.total_epochs - 1,
            self.det.accept_start, self.det.accept_end, self.det.accept_schedule,
        )
        if self.uses_true_labels:
            assignments = [self.true_labels]
            # a random rank per sample, fixed for the run: the accepted share is a seeded random subset
            # that grows round by round (equal confidences would accept an index prefix)
            confidences = [torch.rand(len(self.true_labels), generator=generator(self.seed, "oracle"))]
            self.centroids = []
        else:
            if features is None and not self.bank_filled.any():
                raise RuntimeError("the embedding bank is empty: train at least one epoch before the first round")
            backend = self.kmeans_backend(features.device if features is not None else device or torch.device("cpu"))
            sharded = backend == "torch" and dist.world_size() > 1
            if features is None:
                ids = self.bank_filled.nonzero().squeeze(1)
                ids = ids[dist.rank()::dist.world_size()] if sharded else ids
                features = self.bank[ids].to(device or "cpu")
            ids = torch.arange(len(features)) if ids is None else ids
            levels = cluster_levels(features, ids, len(self.bank), self.det.num_clusters, self._confidence,
                                    backend=backend, hierarchical=self.det.hierarchical, niter=self.det.kmeans_niter,
                                    nredo=self.det.kmeans_nredo, seed=self.seed + epoch, init=self.det.kmeans_init,
                                    sharded=sharded)
            self.centroids = [level.centroids for level in levels]
            assignments = [level.assignments for level in levels]
            confidences = [level.confidence for level in levels]
        for level, (assign, conf) in enumerate(zip(assignments, confidences)):
            self.labels[level] = accept_most_confident(assign, conf, self.share, self.det.accept_per == "cluster").cpu()
            self.confidence[level] = conf.cpu()
        self.last_round = epoch
        self._device_labels = None
        return self._round_stats([assign.cpu() for assign in assignments])

    def _confidence(self, x: torch.Tensor, centroids: torch.Tensor, assignments: torch.Tensor) -> torch.Tensor:
        if self.det.confidence == "margin":
            return margin_confidence(x, centroids, assignments)
        if self.det.confidence == "centroid":
            return centroid_confidence(x, centroids, assignments)
        return softmax_confidence(x, centroids, assignments, self.det.confidence_temperature)

    def _round_stats(self, assignments: list[torch.Tensor]) -> dict[str, float]:
        stats = {"accepted_share": self.share}
        if self.true_labels is None:
            return stats
        for level, assign in enumerate(assignments):
            counts = table_pair_counts(self.labels[level], self.true_labels)
            seen = assign >= 0
            stats[f"level{level}/nmi"] = nmi(assign[seen], self.true_labels[seen])
            stats[f"level{level}/purity"] = purity(assign[seen], self.true_labels[seen])
            stats[f"level{level}/pair_precision"] = counts.precision
            stats[f"level{level}/pair_recall"] = counts.recall
        return stats

    def masks(self, anchor_ids: torch.Tensor, candidate_ids: torch.Tensor,
              sims: torch.Tensor | None = None) -> torch.Tensor | None:
        """False-negative masks ``[L, B, M]`` bool, or None before the first round / in mode none.

        ``sims [B, M]``: the anchors' cosine similarities to the candidates, which the threshold
        detector needs (and learns its thresholds from, at every call).
        """
        if self.thresholds is not None:
            if sims is None:
                raise ValueError("detection.mode=threshold needs the anchor-candidate similarities")
            return self.thresholds.masks(anchor_ids, candidate_ids, sims, self.active)
        if not self.active:
            return None
        if self._device_labels is None or self._device_labels.device != anchor_ids.device:
            self._device_labels = self.labels.to(anchor_ids.device)  # [L, N]: not copied again every step
        if self.mode == "noisy_oracle":
            return noisy_oracle_mask(anchor_ids, candidate_ids, self._device_labels[0], self.partners,
                                     self.det.oracle_recall, self.false_rate, self.seed).unsqueeze(0)
        return false_negative_mask(anchor_ids, candidate_ids, self._device_labels)

    def table_state(self) -> dict[str, Any]:
        """The label table and round position, without the (large) embedding bank."""
        return {
            "labels": self.labels,
            "confidence": self.confidence,
            "centroids": self.centroids,
            "last_round": self.last_round,
            "share": self.share,
        }

    def load_table(self, state: dict[str, Any]) -> None:
        if state["labels"].shape != self.labels.shape:
            raise ValueError(
                f"detector state has labels {tuple(state['labels'].shape)}, expected {tuple(self.labels.shape)}: "
                "the data set or detection.num_clusters changed"
            )
        self.labels.copy_(state["labels"])
        self._device_labels = None
        self.confidence.copy_(state["confidence"])
        self.centroids = list(state["centroids"])
        self.last_round = int(state["last_round"])
        self.share = float(state["share"])

    def state_dict(self) -> dict[str, Any]:
        thresholds = self.thresholds.state_dict() if self.thresholds is not None else None
        return {**self.table_state(), "bank": self.bank, "bank_filled": self.bank_filled, "thresholds": thresholds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.load_table(state)
        if state["bank"].shape != self.bank.shape:
            raise ValueError(f"detector bank has shape {tuple(state['bank'].shape)}, expected {tuple(self.bank.shape)}")
        self.bank.copy_(state["bank"])
        self.bank_filled.copy_(state["bank_filled"])
        if self.thresholds is not None:
            self.thresholds.load_state_dict(state["thresholds"])
