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
from pathlib import Path
from typing import Any, ClassVar, Iterable

import torch

from ifnd.data.build import build_sources, eval_loader, source_labels, train_loader
from ifnd.data.fast_views import build_train_views
from ifnd.falseneg.bank_file import BankFile
from ifnd.falseneg.detectors import build_detector
from ifnd.falseneg.diagnostics import DetectionTally, PairTally
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
        self.method.check_detector(self.detector)
        self.detector.check_run(self.device, ctx.world)
        # augment.device: the CPU views or the fast path (crops on the CPU, the rest on the device)
        self.views = build_train_views(cfg, self.train_src, self.device, self.method.transform,
                                       self.detector.support_views)
        # the bank in checkpoints: a side file about once per epoch, the rows written since in each checkpoint
        self.bank_file = BankFile(Path(cfg.output_dir) / "checkpoints", self.num_samples) \
            if self.detector.needs_bank else None
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
        support = self.views.support_to_device(batch, self.device)  # [B, S, 3, H, W] or None
        ids = self.ids = batch[2].to(self.device, non_blocking=True)
        amp = self.cfg.train.amp and self.device.type == "cuda"
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp):
            self.out = self.method.step(self.model, self.ddp, x1, x2, ids, self.detector, epoch, step, support)
        return self.out.loss

    def after_step(self) -> None:
        out = self.out
        if self.detector.needs_bank:
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
        if self.train_src.undecodable.any():  # marked by the loader's workers too (shared memory)
            record["data/undecodable_images"] = int(self.train_src.undecodable.sum())
        tally = self.tally.reduced()
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

    def _empty_tally(self) -> PairTally:
        """This epoch's tally, on the training device (reduced over ranks once, at the epoch's end)."""
        return PairTally(self.detector.levels + 1, self.num_classes, self.device)

    def state_dict(self) -> dict[str, Any]:
        last = self.last_tally
        return {
            **self.method.state_dict(),
            "detector": self._detector_state(),
            "detection_tally": None if last is None else {"detected": last.detected, "actual": last.actual},
            "undecodable": self.train_src.undecodable.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.method.load_state_dict(state)
        self._load_detector(state["detector"])
        if state.get("detection_tally") is not None:
            self.last_tally = DetectionTally(**state["detection_tally"])
        if state.get("undecodable") is not None:  # in place: the tensor is shared with the loader's workers
            self.train_src.undecodable |= state["undecodable"]

    def _detector_state(self) -> dict[str, Any]:
        """The detector's state, its bank (``features: bank``) replaced by :class:`BankFile`'s share."""
        state = self.detector.state_dict()
        if self.bank_file is not None:
            state["bank_file"] = self.bank_file.split(state.pop("bank"), state.pop("bank_filled"))
        return state

    def _load_detector(self, state: dict[str, Any]) -> None:
        if state.get("bank_file") is not None:  # older checkpoints hold the whole bank instead
            state = dict(state)
            state["bank"], state["bank_filled"] = self.bank_file.join(state.pop("bank_file"))
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
        """Run the detector's round; every rank ends with the same table.

        The torch k-means backend runs on every rank over its own shard (no rank gathers the
        features); faiss runs on rank 0 over every row, and rank 0's table is broadcast.
        """
        start = time.perf_counter()
        features = ids = None
        every_rank = self.detector.shards_rounds(self.device)
        if self.detector.needs_pass_features:
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
        """Pass features: target-encoder embeddings (or backbone features, the detector's ``pass_embedding``)
        of centre-cropped training images, and their dataset ids.

        Each rank embeds every world-th sample: ``gather`` returns ``[N, D]`` on the CPU in
        dataset order (ids None); otherwise this rank's ``[n, D]`` on the device and ``[n]`` ids.
        """
        shard = list(range(self.ctx.rank, self.num_samples, self.ctx.world))
        loader = eval_loader(self.train_src, self.cfg.data.image_size, self.cfg.augment.normalize,
                             self.cfg.train.batch_size, self.cfg.data.num_workers, indices=shard)
        backbone = self.detector.pass_embedding == "backbone"
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
        if self.knn_unscored:
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


def pretrain(cfg: Any, resume: str | None = None, stop_at: tuple[int, int] | None = None,
             overwrite: bool = False) -> dict[str, Any]:
    """Train as configured; returns the metrics written to ``metrics.json``."""
    return Engine(cfg, PretrainTask, resume, stop_at, overwrite=overwrite).fit()
