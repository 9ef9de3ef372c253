"""Contrastive pretraining (SimCLR / MoCo v2) with false-negative detection, as an engine task.

:class:`PretrainTask` supplies what differs from the other commands: it builds data, model,
optimizer, queue, detector and FNE sampler; at an epoch's start it runs a clustering round when
one is due; each step is :func:`~ifnd.pretrain.steps.simclr_step` or
:func:`~ifnd.pretrain.steps.moco_step`; at an epoch's end it reports detection precision and
recall and the kNN monitor. The loop, checkpoints, resume and logging are the
:class:`~ifnd.runtime.loop.Engine`'s.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, ClassVar, Iterable

import torch

from ifnd.config import ConfigError
from ifnd.data.build import build_sources, eval_loader, source_labels, train_loader
from ifnd.data.views import IndexedViews, build_view_transform
from ifnd.falseneg.bank_file import BankFile
from ifnd.falseneg.bayes import FNESampler
from ifnd.falseneg.detector import FalseNegativeDetector
from ifnd.falseneg.diagnostics import DetectionTally, PairTally
from ifnd.metrics.knn import extract_features, knn_accuracy
from ifnd.models.contrastive import build_model
from ifnd.models.ring_buffer import IdRingBuffer
from ifnd.pretrain.optim import build_optimizer
from ifnd.pretrain.steps import StepOutput, moco_step, simclr_step
from ifnd.runtime import distributed as dist
from ifnd.runtime.loop import Context, Engine, LoopSettings
from ifnd.runtime.sampler import ResumableSampler
from ifnd.runtime.schedules import scaled_lr, warmup_cosine
from ifnd.runtime.seeding import generator

log = logging.getLogger(__name__)


class PretrainTask:
    """All state of one pretraining run but the loop's (see :class:`~ifnd.runtime.loop.Task`)."""

    resume_keys: ClassVar[tuple[str, ...]] = (
        "method", "model.backbone", "model.cifar_stem", "model.norm", "model.proj_hidden_dim", "model.proj_dim",
    )
    best_key = None

    def __init__(self, ctx: Context, saved: dict[str, Any] | None = None):
        cfg = self.cfg = ctx.cfg
        self.ctx, self.device = ctx, ctx.device
        self.settings = LoopSettings.from_train(cfg.train)
        self.train_src, self.test_src = build_sources(cfg)
        self.num_samples = len(self.train_src)
        self.true_labels = source_labels(self.train_src)
        self.device_labels = self.true_labels.to(self.device)  # for the per-step detection diagnostics
        self.views = IndexedViews(self.train_src, build_view_transform(cfg), seed=cfg.seed)

        cuda = self.device.type == "cuda"
        self.memory_format = torch.channels_last if cfg.train.channels_last and cuda else torch.contiguous_format
        self.model = build_model(cfg).to(self.device, memory_format=self.memory_format)
        self.ddp = dist.wrap_ddp(self.model, self.device, cfg.model.sync_bn)
        self.queue = IdRingBuffer.from_config(cfg) if cfg.method == "moco" else None
        if self.queue is not None:  # random unit keys, so that the first steps have negatives
            self.queue.fill_random(generator(cfg.seed, "queue"))
            self.queue.to(self.device)
        global_batch = cfg.train.batch_size * ctx.world
        self.optimizer = build_optimizer(self.model.parameters(), cfg,
                                         scaled_lr(cfg.train.lr, global_batch, cfg.train.lr_scaling))
        self.detector = FalseNegativeDetector.from_config(cfg, self.num_samples, cfg.model.proj_dim, self.true_labels)
        # the bank in checkpoints: a side file about once per epoch, the rows written since in each checkpoint
        self.bank_file = BankFile(Path(cfg.output_dir) / "checkpoints", self.num_samples) \
            if self.detector.needs_bank() else None
        if cfg.negatives.sampler not in ("none", "fne") or (cfg.negatives.sampler == "fne" and cfg.method != "moco"):
            raise ConfigError(f"pretraining supports negatives.sampler=none, or fne with method=moco (it re-weights "
                              f"the MoCo queue); got negatives.sampler={cfg.negatives.sampler} with method={cfg.method}")
        self.fne = FNESampler.from_config(cfg)
        if self.fne is not None:
            self.fne.to(self.device)
        self.num_classes = int(self.true_labels.max()) + 1
        self.tally = self._empty_tally()  # this epoch's detected pairs by class, per level and for their union
        self.last_tally: DetectionTally | None = None  # the last epoch that detected
        self.out: StepOutput | None = None
        self.ids: torch.Tensor | None = None  # [B] dataset ids of the last step's batch

    # ---------------------------------------------------------------- engine hooks
    def lr_multiplier(self, step: int, steps_per_epoch: int) -> float:
        train = self.cfg.train
        return warmup_cosine(step, train.epochs * steps_per_epoch, train.warmup_epochs * steps_per_epoch)

    def loader(self, sampler: ResumableSampler, epoch: int) -> Iterable[Any]:
        self.views.set_epoch(epoch)
        return train_loader(self.views, sampler, self.cfg.data.num_workers, self.device.type == "cuda")

    def start_epoch(self, epoch: int, step: int) -> dict[str, Any]:
        record: dict[str, Any] = {}
        self.detector.start_epoch(epoch)
        if step == 0 and self.detector.wants_round(epoch):
            record.update(self.clustering_round(epoch))
        if self.fne is not None and step == 0:
            self.fne.start_epoch(epoch)
        self.tally = self._empty_tally()
        return record

    def step(self, batch: Any, epoch: int, step: int) -> torch.Tensor:
        (x1, x2), _, ids = batch
        x1, x2 = (x.to(self.device, non_blocking=True, memory_format=self.memory_format) for x in (x1, x2))
        ids = self.ids = ids.to(self.device, non_blocking=True)
        amp = self.cfg.train.amp and self.device.type == "cuda"
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp):
            if self.queue is None:
                self.out = simclr_step(self.ddp, x1, x2, ids, self.detector, self.cfg)
            else:
                # FNE draws of this step and rank: reproducible on resume, different on each rank
                draws = generator(self.cfg.seed, "draws", epoch, step, self.ctx.rank, device=self.device)
                self.out = moco_step(self.model, self.ddp, self.queue, x1, x2, ids, self.detector, self.cfg,
                                     self.fne, draws)
        return self.out.loss

    def after_step(self) -> None:
        out = self.out
        if self.detector.needs_bank():
            ids = dist.gather(self.ids)
            self.detector.observe(ids, dist.gather(out.embeddings))
            self.bank_file.mark(ids)
        if out.fn_masks is not None:  # the levels, then their union (what the loss removes at any level)
            labels = self.device_labels
            views = torch.cat([out.fn_masks, out.fn_masks.any(0, keepdim=True)])
            self.tally.add(views, out.anchor_ids, out.candidate_ids, labels[out.anchor_ids],
                           labels[out.candidate_ids.clamp(min=0)])

    def end_epoch(self, epochs_done: int) -> dict[str, Any]:
        record: dict[str, Any] = {}
        tally = self.tally.reduced()
        if self.detector.active and int(tally.actual.sum()):
            record.update(fn_precision=tally.precision(), fn_recall=tally.recall())
            for level in range(len(tally.detected) - 1):
                record.update({f"fn_level{level}_precision": tally.precision(level),
                               f"fn_level{level}_recall": tally.recall(level)})
            self.last_tally = tally
        knn = self.cfg.knn
        if knn.every and epochs_done % knn.every == 0 or epochs_done == self.cfg.train.epochs:
            record.update(self.knn_monitor())
        return record

    def _empty_tally(self) -> PairTally:
        """This epoch's tally, on the training device (reduced over ranks once, at the epoch's end)."""
        return PairTally(self.detector.labels.shape[0] + 1, self.num_classes, self.device)

    def state_dict(self) -> dict[str, Any]:
        last = self.last_tally
        return {
            "queue": self.queue.state_dict() if self.queue is not None else None,
            "detector": self._detector_state(),
            "fne": self.fne.state_dict() if self.fne is not None else None,
            "detection_tally": None if last is None else {"detected": last.detected, "actual": last.actual},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.queue is not None:
            self.queue.load_state_dict(state["queue"])
        self._load_detector(state["detector"])
        if self.fne is not None:
            self.fne.load_state_dict(state["fne"])
        if state.get("detection_tally") is not None:
            self.last_tally = DetectionTally(**state["detection_tally"])

    def _detector_state(self) -> dict[str, Any]:
        """The detector's state with its bank replaced by :class:`BankFile`'s share (None: no bank in use)."""
        state = self.detector.state_dict()
        bank, filled = state.pop("bank"), state.pop("bank_filled")
        state["bank_file"] = self.bank_file.split(bank, filled) if self.bank_file is not None else None
        return state

    def _load_detector(self, state: dict[str, Any]) -> None:
        if "bank_file" in state:  # older checkpoints hold the whole bank
            state = dict(state)
            share = state.pop("bank_file")
            state["bank"], state["bank_filled"] = (self.detector.bank, self.detector.bank_filled) if share is None \
                else self.bank_file.join(share)
        self.detector.load_state_dict(state)

    def summary(self, history: list[dict[str, Any]]) -> dict[str, Any]:
        last_knn = next((h for h in reversed(history) if "knn_top1" in h), {})
        last_fn = next((h for h in reversed(history) if "fn_precision" in h), {})
        detecting = [h for h in history if "fn_precision" in h]
        per_class = self.last_tally.per_class() if self.last_tally is not None else None
        return {
            "method": self.cfg.method,
            "detection": self.cfg.detection.mode,
            "knn_top1": last_knn.get("knn_top1", math.nan),
            "knn_top5": last_knn.get("knn_top5", math.nan),
            "fn_precision": last_fn.get("fn_precision", math.nan),
            "fn_recall": last_fn.get("fn_recall", math.nan),
            "fn_precision_mean": sum(h["fn_precision"] for h in detecting) / len(detecting) if detecting else math.nan,
            "fn_recall_mean": sum(h["fn_recall"] for h in detecting) / len(detecting) if detecting else math.nan,
            # the last detecting epoch, union of the levels: per true class, and detected pairs by
            # (anchor class, candidate class): which classes get labels, which are confused
            "fn_per_class": per_class,
            "fn_confusion": None if self.last_tally is None else self.last_tally.detected[-1].tolist(),
            "accepted_share": self.detector.share,
        }

    # ---------------------------------------------------------------- detection and monitor
    def clustering_round(self, epoch: int) -> dict[str, float]:
        """Run the detector's round; every rank ends with the same table.

        The torch k-means backend runs on every rank over its own shard (no rank gathers the
        features); faiss runs on rank 0 over every row, and rank 0's table is broadcast.
        """
        start = time.perf_counter()
        features = ids = None
        every_rank = self.detector.mode == "ifnd" and self.detector.kmeans_backend(self.device) == "torch"
        if self.detector.mode == "ifnd" and self.cfg.detection.features == "pass":
            features, ids = self._embed_training_set(gather=not every_rank)
        if every_rank:
            stats = self.detector.run_round(epoch, features, ids, self.device)
        else:
            stats = self.detector.run_round(epoch, features) if dist.is_main() else {}
        if self.ctx.world > 1 and not every_rank:  # every rank masks with rank 0's table
            self.detector.load_table(dist.broadcast_object(self.detector.table_state() if dist.is_main() else None))
            stats = dist.broadcast_object(stats)
        stats["round_time_s"] = time.perf_counter() - start
        if dist.is_main():
            log.info("clustering round before epoch %d: %s", epoch, {k: round(v, 4) for k, v in stats.items()})
        return {f"round/{k}": v for k, v in stats.items()}

    def _embed_training_set(self, gather: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``pass`` features: target-encoder embeddings (or backbone features, ``detection.embedding=backbone``)
        of centre-cropped training images, and their dataset ids.

        Each rank embeds every world-th sample: ``gather`` returns ``[N, D]`` on the CPU in
        dataset order (ids None); otherwise this rank's ``[n, D]`` on the device and ``[n]`` ids.
        """
        shard = list(range(self.ctx.rank, self.num_samples, self.ctx.world))
        loader = eval_loader(self.train_src, self.cfg.data.image_size, self.cfg.augment.normalize,
                             self.cfg.train.batch_size, self.cfg.data.num_workers, indices=shard)
        backbone = self.cfg.detection.embedding == "backbone"
        encoder = self.model.target_backbone if backbone else _TargetEncoder(self.model)
        feats, _ = extract_features(encoder, loader, self.device)
        ids = torch.tensor(shard, device=self.device)
        if not gather:
            return feats.to(self.device), ids
        return dist.gather_rows(feats.to(self.device), ids, self.num_samples).cpu(), None

    def knn_monitor(self) -> dict[str, float]:
        """Weighted kNN top-1/top-5 of the backbone's features, test split against training split.

        Every rank embeds every world-th training and test image; the test features (the queries)
        are gathered, the training features stay on their rank, and scoring runs on the device
        with a top-k merge across ranks (:func:`~ifnd.metrics.knn.knn_scores`).
        """
        if self.test_src is None:
            return {}
        cfg, rank, world = self.cfg, self.ctx.rank, self.ctx.world
        args = (cfg.data.image_size, cfg.augment.normalize, 256, cfg.data.num_workers)
        parts = []
        for source in (self.train_src, self.test_src):
            shard = list(range(rank, len(source), world))
            feats, labels = extract_features(self.model.backbone, eval_loader(source, *args, indices=shard), self.device,
                                             on_device=True)
            parts.append((feats, labels, torch.tensor(shard, device=self.device)))
        (train_feats, train_labels, _), (test_feats, test_labels, test_ids) = parts
        test_feats = dist.gather_rows(test_feats, test_ids, len(self.test_src))
        test_labels = dist.gather_rows(test_labels.unsqueeze(1), test_ids, len(self.test_src)).squeeze(1)
        acc = knn_accuracy(train_feats, train_labels, test_feats, test_labels, cfg.knn.k, cfg.knn.temperature,
                           sharded=world > 1)
        return {"knn_top1": acc["top1"], "knn_top5": acc["top5"]}


class _TargetEncoder(torch.nn.Module):
    """Adapter: ``model.target`` as a module, for :func:`extract_features`."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.target(x)


def pretrain(cfg: Any, resume: str | None = None, stop_at: tuple[int, int] | None = None) -> dict[str, Any]:
    """Train as configured; returns the metrics written to ``metrics.json``."""
    return Engine(cfg, PretrainTask, resume, stop_at).fit()
