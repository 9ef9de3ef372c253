"""The :class:`Detector` interface, and what the modes with a pseudo-label table share.

A detector is built by :func:`~ifnd.falseneg.detectors.build_detector` from ``detection.mode``;
the training loop uses only this interface:

* what it needs: ``needs_similarities`` (the anchor-candidate similarities at :meth:`~Detector.masks`),
  ``needs_pass_features`` (an embedding pass over the training set before a round, of
  ``pass_embedding``), ``needs_bank`` (the training-pass embeddings, handed to :meth:`~Detector.observe`),
  ``support_views`` (S extra views per image, embedded each step and handed to :meth:`~Detector.masks` as
  :class:`SupportViews`);
* when: :meth:`~Detector.start_epoch`, :meth:`~Detector.wants_round`, :meth:`~Detector.run_round`, ``active``;
* what: :meth:`~Detector.masks` ``[L, B, M]`` and :meth:`~Detector.loss_masks` (its ``detection.loss``
  and ``detection.combine``);
* its state: :meth:`~Detector.table_state` (what rank 0 broadcasts after a round) and
  :meth:`~Detector.state_dict` (the checkpoint).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, TypeVar

import torch

from ifnd.config import ConfigError
from ifnd.falseneg.acceptance import accept_most_confident, accepted_share
from ifnd.falseneg.diagnostics import nmi, purity, table_pair_counts
from ifnd.falseneg.masks import false_negative_mask, keep_detected_pairs
from ifnd.losses import LossMasks, level_masks

S = TypeVar("S")


def detection_settings(cls: type[S], cfg: Any, **extra: Any) -> S:
    """A settings dataclass ``cls`` filled from the ``detection.<field>`` keys, plus ``extra`` fields."""
    values = {f.name: cfg.get(f"detection.{f.name}") for f in fields(cls) if f.name not in extra}
    return cls(**values, **extra)


@dataclass(frozen=True)
class LossPolicy:
    """How the loss takes the detected pairs: ``detection.loss`` (elimination / attraction, see
    :data:`~ifnd.losses.MASK_POLICIES`) and ``detection.combine`` of the levels (union / average)."""

    loss: str
    combine: str

    @classmethod
    def from_config(cls, cfg: Any) -> "LossPolicy":
        return detection_settings(cls, cfg)

    def __call__(self, positive: torch.Tensor, masks: torch.Tensor | None,
                 exclude: torch.Tensor | None) -> LossMasks:
        """The :class:`~ifnd.losses.LossMasks` of ``positive [B, M]`` with the detected ``masks [L, B, M]``."""
        return level_masks(positive, masks, exclude, self.loss, self.combine)


@dataclass(frozen=True)
class SupportViews:
    """The embeddings a detector with ``support_views`` gets each step (unit norm, no gradient)."""

    anchors: torch.Tensor     # [B, V, D] the views of each anchor's image (SimCLR: its 2 training views and S support views)
    candidates: torch.Tensor  # [M, D] the candidates


class Detector:
    """A false-negative detector that detects nothing (the ``none`` mode, and every mode's defaults).

    Args:
        policy: how the loss takes the detected pairs.
    """

    needs_similarities = False
    needs_pass_features = False
    needs_bank = False
    support_views = 0  # S, the extra views per image the step embeds for masks (0: none)
    pass_embedding = "head"  # with needs_pass_features: the projection head's output, or "backbone"

    def __init__(self, policy: LossPolicy):
        self.policy = policy
        self.epoch = 0
        self.share = 0.0  # the accepted share of the last round
        self.keep_pairs = "all"  # detection.keep_pairs, the ablation that keeps the false or the true negatives
        self.pair_classes: torch.Tensor | None = None  # [N] true classes, for keep_pairs

    def restrict_pairs(self, keep: str, true_labels: torch.Tensor | None) -> None:
        """From now on :meth:`detect` keeps only the false negatives or only the true negatives among the
        detected pairs (``keep``, :data:`~ifnd.falseneg.masks.KEEP_PAIRS`), judged by ``true_labels [N]``."""
        if keep != "all" and true_labels is None:
            raise ConfigError(f"detection.keep_pairs={keep} judges the detected pairs by the true labels, which this "
                              "data set has none of; set detection.keep_pairs=all")
        self.keep_pairs, self.pair_classes = keep, true_labels

    def detect(self, anchor_ids: torch.Tensor, candidate_ids: torch.Tensor, sims: torch.Tensor | None = None,
               support: SupportViews | None = None) -> torch.Tensor | None:
        """What a training step masks: :meth:`masks`, kept to the pairs ``detection.keep_pairs`` names."""
        masks = self.masks(anchor_ids, candidate_ids, sims, support)
        if masks is None or self.keep_pairs == "all":
            return masks
        if self.pair_classes.device != masks.device:  # moved once, not every step
            self.pair_classes = self.pair_classes.to(masks.device)
        return keep_detected_pairs(masks, anchor_ids, candidate_ids, self.pair_classes, self.keep_pairs)

    @classmethod
    def from_config(cls, cfg: Any, num_samples: int, embed_dim: int, true_labels: torch.Tensor | None) -> "Detector":
        """The detector of ``cfg``'s ``detection.*`` keys for a training set of ``num_samples`` (what
        :func:`~ifnd.falseneg.detectors.build_detector` calls; a mode with settings of its own overrides it).

        Args:
            embed_dim: D, width of the embeddings a bank would hold.
            true_labels: ``[N]`` long, for the oracles and the diagnostics; may be None.
        """
        return cls(LossPolicy.from_config(cfg))

    @property
    def levels(self) -> int:
        """L, the granularity levels of :meth:`masks`."""
        return 1

    @property
    def active(self) -> bool:
        """Whether :meth:`masks` detects anything yet."""
        return False

    def start_epoch(self, epoch: int) -> None:
        """The training epoch that begins."""
        self.epoch = epoch

    def wants_round(self, epoch: int) -> bool:
        """Whether a round belongs before training epoch ``epoch`` (0-based)."""
        return False

    def shards_rounds(self, device: torch.device) -> bool:
        """Whether every rank runs :meth:`run_round` on its own shard (else rank 0 runs it and broadcasts)."""
        return False

    def check_run(self, device: torch.device, world_size: int) -> None:
        """A ConfigError at start-up when a run on ``device`` with ``world_size`` processes cannot honour
        this detector's settings."""

    def run_round(self, epoch: int, features: torch.Tensor | None = None, ids: torch.Tensor | None = None,
                  device: torch.device | None = None) -> dict[str, float]:
        """A round before epoch ``epoch`` on ``features [N, D]`` (``needs_pass_features``), or on this rank's
        rows ``[n, D]`` of dataset ids ``ids [n]`` where :meth:`shards_rounds`; ``device``: where bank rows
        are clustered. Returns its statistics."""
        raise RuntimeError(f"{type(self).__name__} has no rounds")

    def observe(self, ids: torch.Tensor, embeddings: torch.Tensor) -> None:
        """Training-pass embeddings ``[B, D]`` of samples ``ids [B]`` (only where ``needs_bank``)."""
        raise RuntimeError(f"{type(self).__name__} keeps no embedding bank")

    def masks(self, anchor_ids: torch.Tensor, candidate_ids: torch.Tensor, sims: torch.Tensor | None = None,
              support: SupportViews | None = None) -> torch.Tensor | None:
        """False-negative masks ``[L, B, M]`` bool of anchors ``[B]`` x candidates ``[M]`` (ids below 0:
        no sample), or None when nothing is detected; ``sims [B, M]`` where ``needs_similarities``,
        ``support`` where ``support_views`` (while :attr:`active`)."""
        return None

    def loss_masks(self, positive: torch.Tensor, masks: torch.Tensor | None,
                   exclude: torch.Tensor | None) -> LossMasks:
        """The loss's masks for ``positive [B, M]`` with the detected ``masks [L, B, M]``."""
        return self.policy(positive, masks, exclude)

    def table_state(self) -> dict[str, Any]:
        """What every rank needs after rank 0's round."""
        return {}

    def load_table(self, state: dict[str, Any]) -> None:
        """Take rank 0's :meth:`table_state`."""

    def state_dict(self) -> dict[str, Any]:
        return self.table_state()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.load_table(state)


@dataclass(frozen=True)
class RoundSchedule:
    """When rounds happen and which share of the labels they accept (``detection.*`` keys, the run
    length and seed)."""

    warmup_epochs: int
    cluster_every: int
    accept_start: float
    accept_end: float
    accept_schedule: str
    accept_per: str
    total_epochs: int
    seed: int

    @classmethod
    def from_config(cls, cfg: Any) -> "RoundSchedule":
        return detection_settings(cls, cfg, total_epochs=cfg.train.epochs, seed=cfg.seed)

    def share(self, epoch: int) -> float:
        """The accepted share of a round before epoch ``epoch``."""
        return accepted_share(epoch, self.warmup_epochs, self.total_epochs - 1, self.accept_start, self.accept_end,
                              self.accept_schedule)


class TableDetector(Detector):
    """A detector with a table of accepted pseudo-labels ``labels [L, N]`` (-1 = not accepted), recomputed by
    rounds on :class:`RoundSchedule`; a subclass supplies each round's assignments and confidences.

    Args:
        policy: see :class:`Detector`.
        schedule: when rounds happen, which share they accept.
        levels: L.
        num_samples: N, size of the training set.
        true_labels: ``[N]`` long, for the round's diagnostics (and the oracles); may be None.
    """

    def __init__(self, policy: LossPolicy, schedule: RoundSchedule, levels: int, num_samples: int,
                 true_labels: torch.Tensor | None):
        super().__init__(policy)
        self.schedule = schedule
        self.true_labels = true_labels
        self.labels = torch.full((levels, num_samples), -1, dtype=torch.long)
        self.centroids: list[torch.Tensor] = []  # the last round's, for its review (not checkpointed)
        self.last_round = -1
        self._device_labels: torch.Tensor | None = None  # the table on the training device, once per round

    @property
    def levels(self) -> int:
        return self.labels.shape[0]

    @property
    def active(self) -> bool:
        return self.last_round >= 0

    def wants_round(self, epoch: int) -> bool:
        since = epoch - self.schedule.warmup_epochs
        return since >= 0 and since % self.schedule.cluster_every == 0 and epoch > self.last_round

    def round_share(self, epoch: int) -> float:
        """The share a round before epoch ``epoch`` accepts."""
        return self.schedule.share(epoch)

    def assign(self, epoch: int, features: torch.Tensor | None, ids: torch.Tensor | None = None,
               device: torch.device | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per level, the assignments ``[N]`` long (-1: none) and confidences ``[N]`` of a round (on any
        device; arguments as :meth:`Detector.run_round`'s)."""
        raise NotImplementedError

    def run_round(self, epoch: int, features: torch.Tensor | None = None, ids: torch.Tensor | None = None,
                  device: torch.device | None = None) -> dict[str, float]:
        """Recompute the table before epoch ``epoch``; the accepted share, and per level NMI / purity /
        pair precision and recall when true labels exist (of the accepted table, before :meth:`review`: a level
        the guard withdraws keeps the precision it was judged on; what the loss removed is the run's tally)."""
        self.share = self.round_share(epoch)
        previous = self.labels.clone() if self.last_round >= 0 else None
        assignments, confidences = self.assign(epoch, features, ids, device)
        per_cluster = self.schedule.accept_per == "cluster"
        for level, (assign, conf) in enumerate(zip(assignments, confidences)):  # accepted where they were computed
            self.labels[level] = accept_most_confident(assign, conf, self.share, per_cluster).cpu()
        assignments = [assign.cpu() for assign in assignments]
        stats = self._round_stats(assignments)  # the accepted table before a review withdraws labels: the guard's truth
        review = self.review(epoch, features, assignments, previous)
        self.last_round = epoch
        self._device_labels = None
        return {**stats, **review}

    def review(self, epoch: int, features: torch.Tensor | None, assignments: list[torch.Tensor],
               previous: torch.Tensor | None) -> dict[str, float]:
        """After a round's acceptance: a subclass may withdraw labels from :attr:`labels` (the guard); returns
        its statistics. ``features``: the round's ``[N, D]`` as :meth:`run_round` got them (None: the bank's);
        ``assignments``: per level ``[N]``; ``previous``: the last round's table ``[L, N]`` or None."""
        return {}

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

    def masks(self, anchor_ids: torch.Tensor, candidate_ids: torch.Tensor, sims: torch.Tensor | None = None,
              support: SupportViews | None = None) -> torch.Tensor | None:
        """Pairs with the same accepted label, per level, or None before the first round."""
        if not self.active:
            return None
        if self._device_labels is None or self._device_labels.device != anchor_ids.device:
            self._device_labels = self.labels.to(anchor_ids.device)  # [L, N]: not copied again every step
        return self.table_masks(anchor_ids, candidate_ids, self._device_labels)

    def table_masks(self, anchor_ids: torch.Tensor, candidate_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The masks ``[L, B, M]`` of the table ``labels [L, N]`` (on the anchors' device)."""
        return false_negative_mask(anchor_ids, candidate_ids, labels)

    def table_state(self) -> dict[str, Any]:
        """The label table and round position: what the masks and the next round need (exact resume). The
        round's confidences and centroids are not kept: nothing reads them after the round, and at
        N = 1.28M, k = 25k-100k they would add about 105 MB to every checkpoint."""
        return {"labels": self.labels, "last_round": self.last_round, "share": self.share}

    def load_table(self, state: dict[str, Any]) -> None:
        if state["labels"].shape != self.labels.shape:
            raise ValueError(
                f"detector state has labels {tuple(state['labels'].shape)}, expected {tuple(self.labels.shape)}: "
                "the data set or detection.num_clusters changed"
            )
        self.labels.copy_(state["labels"])  # older checkpoints' confidence and centroids are not read
        self._device_labels = None
        self.last_round = int(state["last_round"])
        self.share = float(state["share"])


def require_true_labels(mode: str, true_labels: torch.Tensor | None) -> torch.Tensor:
    """``true_labels``, or a ConfigError naming ``detection.mode``."""
    if true_labels is None:
        raise ConfigError(f"detection.mode={mode} needs true labels, and this data set has none")
    return true_labels
