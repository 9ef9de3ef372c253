"""Contrastive pretraining (SimCLR / MoCo v2) with false-negative detection, as an engine task.

:class:`PretrainTask` supplies what differs from the other commands: it builds data, model,
optimizer, method (:mod:`ifnd.pretrain.methods`: its model, views, step and extra state such as
MoCo's queue) and detector (:mod:`ifnd.falseneg.detectors`); at an epoch's start it runs a detection
round when one is due; each step is the method's; at an epoch's end it reports detection precision and
recall and the kNN monitor. The loop, checkpoints, resume and logging are the
:class:`~ifnd.runtime.loop.Engine`'s.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, ClassVar, Iterable

import torch

from ifnd.data.build import build_sources, eval_loader, source_labels, train_loader
from ifnd.data.fast_views import build_train_views
from ifnd.falseneg.detectors import build_detector
from ifnd.falseneg.diagnostics import DetectionTally, tally_pairs
from ifnd.metrics.knn import extract_features, knn_accuracy, knn_unscored_reason
from ifnd.pretrain.methods import build_method
from ifnd.pretrain.optim import build_optimizer
from ifnd.pretrain.steps import StepOutput
from ifnd.runtime import distributed as dist
from ifnd.runtime.loop import Context, Engine, LoopSettings
from ifnd.runtime.sampler import ResumableSampler
from ifnd.runtime.schedules import scaled_lr, warmup_cosine

log = logging.getLogger(__name__)


class PretrainTask:
    """All state of one pretraining run but the loop's (see :class:`~ifnd.runtime.loop.Task`)."""

    resume_may_change: ClassVar[tuple[str, ...]] = ()  # train.epochs sets the cosine schedule's length
    best_key = None

    def __init__(self, ctx: Context, saved: dict[str, Any] | None = None):
        cfg = self.cfg = ctx.cfg
        self.ctx, self.device = ctx, ctx.device
        self.settings = LoopSettings.from_train(cfg.train)
        self.train_src, self.test_src = build_sources(cfg)
        self.num_samples = len(self.train_src)
        self.true_labels = source_labels(self.train_src)
        self.device_labels = self.true_labels.to(self.device)  # for the per-step detection diagnostics
        self.method = build_method(cfg, self.device, ctx.rank)
        # augment.device: the CPU views or the fast path (crops on the CPU, the rest on the device)
        self.views = build_train_views(cfg, self.train_src, self.device, self.method.transform)
        self.knn_unscored = knn_unscored_reason(self.true_labels, self.test_src is not None)
        if self.knn_unscored and dist.is_main():
            log.warning("the kNN monitor is not scored: %s", self.knn_unscored)

        cuda = self.device.type == "cuda"
        self.memory_format = torch.channels_last if cfg.train.channels_last and cuda else torch.contiguous_format
        self.model = self.method.build_model(cfg).to(self.device, memory_format=self.memory_format)
        self.ddp = dist.wrap_ddp(self.model, self.device, cfg.model.sync_bn)
        global_batch = cfg.train.batch_size * ctx.world
        self.optimizer = build_optimizer(self.model.parameters(), cfg,
                                         scaled_lr(cfg.train.lr, global_batch, cfg.train.lr_scaling))
        self.detector = build_detector(cfg, self.num_samples, cfg.model.proj_dim, self.true_labels)
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
        self.views.dataset.set_epoch(epoch)
        return train_loader(self.views.dataset, sampler, self.cfg.data.num_workers, self.device.type == "cuda")

    def start_epoch(self, epoch: int, step: int) -> dict[str, Any]:
        record: dict[str, Any] = {}
        self.detector.start_epoch(epoch)
        if step == 0 and self.detector.wants_round(epoch):
            record.update(self.clustering_round(epoch))
        if step == 0:
            self.method.start_epoch(epoch)
        self.tally = self._empty_tally()
        return record

    def step(self, batch: Any, epoch: int, step: int) -> torch.Tensor:
        x1, x2 = (x.contiguous(memory_format=self.memory_format) for x in self.views.to_device(batch, self.device))
        ids = self.ids = batch[2].to(self.device, non_blocking=True)
        amp = self.cfg.train.amp and self.device.type == "cuda"
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp):
            self.out = self.method.step(self.model, self.ddp, x1, x2, ids, self.detector, epoch, step)
        return self.out.loss

    def after_step(self) -> None:
        out = self.out
        if self.detector.needs_bank:
            self.detector.observe(dist.gather(self.ids), dist.gather(out.embeddings))
        if out.fn_masks is not None:  # the levels, then their union (what the loss removes at any level)
            labels = self.device_labels
            views = torch.cat([out.fn_masks, out.fn_masks.any(0, keepdim=True)])
            self.tally += tally_pairs(views, out.anchor_ids, out.candidate_ids, labels[out.anchor_ids],
                                      labels[out.candidate_ids.clamp(min=0)], self.num_classes)

    def end_epoch(self, epochs_done: int) -> dict[str, Any]:
        record: dict[str, Any] = {}
        if self.train_src.undecodable.any():  # marked by the loader's workers too (shared memory)
            record["data/undecodable_images"] = int(self.train_src.undecodable.sum())
        tally = DetectionTally(dist.sum_tensor(self.tally.detected), dist.sum_tensor(self.tally.actual))
        if self.detector.active and int(tally.actual.sum()):
            record.update(fn_precision=tally.precision(), fn_recall=tally.recall())
            for level in range(len(tally.detected) - 1):
                record.update({f"fn_level{level}_precision": tally.precision(level),
                               f"fn_level{level}_recall": tally.recall(level)})
            self.last_tally = tally
        return record

    def evaluate(self, epochs_done: int) -> dict[str, Any]:
        knn = self.cfg.knn
        if knn.every and epochs_done % knn.every == 0 or epochs_done == self.cfg.train.epochs:
            return self.knn_monitor()
        return {}

    def _empty_tally(self) -> DetectionTally:
        views = self.detector.levels + 1
        return DetectionTally(torch.zeros(views, self.num_classes, self.num_classes, dtype=torch.long),
                              torch.zeros(self.num_classes, dtype=torch.long))

    def state_dict(self) -> dict[str, Any]:
        last = self.last_tally
        return {
            **self.method.state_dict(),
            "detector": self.detector.state_dict(),
            "detection_tally": None if last is None else {"detected": last.detected, "actual": last.actual},
            "undecodable": self.train_src.undecodable.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.method.load_state_dict(state)
        self.detector.load_state_dict(state["detector"])
        if state.get("detection_tally") is not None:
            self.last_tally = DetectionTally(**state["detection_tally"])
        if state.get("undecodable") is not None:  # in place: the tensor is shared with the loader's workers
            self.train_src.undecodable |= state["undecodable"]

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
            "knn_not_scored": self.knn_unscored,  # why knn_top1/top5 are NaN (None: they are scored)
            "fn_precision": last_fn.get("fn_precision", math.nan),
            "fn_recall": last_fn.get("fn_recall", math.nan),
            "fn_precision_mean": sum(h["fn_precision"] for h in detecting) / len(detecting) if detecting else math.nan,
            "fn_recall_mean": sum(h["fn_recall"] for h in detecting) / len(detecting) if detecting else math.nan,
            # the last detecting epoch, union of the levels: per true class, and detected pairs by
            # (anchor class, candidate class): which classes get labels, which are confused
            "fn_per_class": per_class,
            "fn_confusion": None if self.last_tally is None else self.last_tally.detected[-1].tolist(),
            "accepted_share": self.detector.share,
            # training images that failed to decode and were replaced by others (data.on_corrupt=skip)
            "undecodable_images": int(self.train_src.undecodable.sum()),
        }

    # ---------------------------------------------------------------- detection and monitor
    def clustering_round(self, epoch: int) -> dict[str, float]:
        """Run the detector's round; every rank ends with the same table (rank 0's)."""
        start = time.perf_counter()
        features = None
        if self.detector.needs_pass_features:
            features = self._embed_training_set()
        stats = self.detector.run_round(epoch, features) if dist.is_main() else {}
        if self.ctx.world > 1:  # every rank masks with rank 0's table
            self.detector.load_table(dist.broadcast_object(self.detector.table_state() if dist.is_main() else None))
            stats = dist.broadcast_object(stats)
        stats["round_time_s"] = time.perf_counter() - start
        if dist.is_main():
            log.info("clustering round before epoch %d: %s", epoch, {k: round(v, 4) for k, v in stats.items()})
        return {f"round/{k}": v for k, v in stats.items()}

    def _embed_training_set(self) -> torch.Tensor:
        """Pass features: target-encoder embeddings (or backbone features, the detector's ``pass_embedding``)
        ``[N, D]`` of centre-cropped training images.

        Each rank embeds every world-th sample; the shards are gathered by dataset index.
        """
        shard = list(range(self.ctx.rank, self.num_samples, self.ctx.world))
        loader = eval_loader(self.train_src, self.cfg.data.image_size, self.cfg.augment.normalize,
                             self.cfg.train.batch_size, self.cfg.data.num_workers, indices=shard)
        backbone = self.detector.pass_embedding == "backbone"
        encoder = self.model.target_backbone if backbone else _TargetEncoder(self.model)
        feats, _ = extract_features(encoder, loader, self.device)
        return dist.gather_rows(feats.to(self.device), torch.tensor(shard, device=self.device), self.num_samples).cpu()

    def knn_monitor(self) -> dict[str, float]:
        """Weighted kNN top-1/top-5 of the backbone's features, test split against training split (rank 0)."""
        if self.knn_unscored or not dist.is_main():
            return {}
        cfg = self.cfg
        args = (cfg.data.image_size, cfg.augment.normalize, 256, cfg.data.num_workers)
        train_feats, train_labels = extract_features(self.model.backbone, eval_loader(self.train_src, *args), self.device)
        test_feats, test_labels = extract_features(self.model.backbone, eval_loader(self.test_src, *args), self.device)
        acc = knn_accuracy(train_feats, train_labels, test_feats, test_labels, cfg.knn.k, cfg.knn.temperature)
        return {"knn_top1": acc["top1"], "knn_top5": acc["top5"]}


class _TargetEncoder(torch.nn.Module):
    """Adapter: ``model.target`` as a module, for :func:`extract_features`."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.target(x)


def pretrain(cfg: Any, resume: str | None = None, stop_at: tuple[int, int] | None = None,
             overwrite: bool = False) -> dict[str, Any]:
    """Train as configured; returns the metrics written to ``metrics.json``."""
    return Engine(cfg, PretrainTask, resume, stop_at, overwrite=overwrite).fit()
