"""Contrastive pretraining (SimCLR / MoCo v2) with false-negative detection.

Read top to bottom: :func:`pretrain` builds data, model, optimizer and detector,
restores a checkpoint when asked, then loops over epochs: a clustering round when
one is due, :func:`train_one_epoch`, the kNN monitor, a checkpoint and metrics.json.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ifnd.config import Config, save_config
from ifnd.data.build import build_sources, eval_loader, source_labels, train_loader
from ifnd.data.sampler import ResumableSampler
from ifnd.data.views import IndexedViews, build_view_transform
from ifnd.eval.knn import extract_features, knn_accuracy
from ifnd.falseneg.detector import FalseNegativeDetector
from ifnd.falseneg.diagnostics import PairCounts, batch_pair_counts
from ifnd.models.contrastive import build_model
from ifnd.models.queue import IdQueue
from ifnd.train import distributed as dist
from ifnd.train.checkpoint import (
    check_compatible,
    load_checkpoint,
    resolve_resume,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from ifnd.train.optim import build_optimizer, build_scheduler, scaled_lr
from ifnd.train.scalars import ScalarWriter
from ifnd.train.steps import build_fne_sampler, moco_step, simclr_step
from ifnd.train.stopping import StopSignals

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class Interrupted(Exception):
    """Raised inside an epoch to stop after a checkpoint (Ctrl-C, or tests simulating a kill)."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda but no CUDA GPU is visible; use --set device=cpu")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


class Trainer:
    """All state of one pretraining run; :meth:`fit` is the loop."""

    def __init__(self, cfg: Config, resume: str | None = None, stop_at: tuple[int, int] | None = None):
        self.cfg = cfg
        self.stop_at = stop_at  # (epoch, step): simulate a kill there (tests)
        self.stop_signals = StopSignals()  # SIGTERM / SIGUSR1: checkpoint and stop after the current step
        self.rank, self.world, local_rank = dist.init()
        self.device = pick_device(cfg.device, local_rank)
        self.run_dir = Path(cfg.output_dir)
        seed_everything(cfg.seed)

        train_src, self.test_src = build_sources(cfg)
        self.train_src = train_src
        self.true_labels = source_labels(train_src)
        # on the training device once, for the per-step detection diagnostics
        self.device_labels = self.true_labels.to(self.device)
        self.views = IndexedViews(train_src, build_view_transform(cfg), seed=cfg.seed)
        self.sampler = ResumableSampler(len(train_src), cfg.train.batch_size, cfg.seed, self.world, self.rank)

        self.model = build_model(cfg).to(self.device)
        self.memory_format = torch.channels_last if cfg.train.channels_last and self.device.type == "cuda" \
            else torch.contiguous_format
        self.model = self.model.to(memory_format=self.memory_format)
        self.ddp = dist.wrap_ddp(self.model, self.device, cfg.model.sync_bn)
        self.queue = IdQueue(cfg.moco.queue_size, cfg.model.proj_dim).to(self.device) if cfg.method == "moco" else None

        global_batch = cfg.train.batch_size * self.world
        steps = self.sampler.steps_per_epoch
        self.optimizer = build_optimizer(self.model.parameters(), cfg, scaled_lr(cfg.train.lr, global_batch))
        self.scheduler = build_scheduler(self.optimizer, cfg.train.epochs * steps, cfg.train.warmup_epochs * steps)
        self.detector = FalseNegativeDetector(cfg, len(train_src), cfg.model.proj_dim, self.true_labels)
        self.fne = build_fne_sampler(cfg)
        if self.fne is not None:
            self.fne.to(self.device)

        self.epoch, self.step, self.global_step = 0, 0, 0
        self.history: list[dict[str, Any]] = []
        self.train_time = 0.0
        checkpoint = resolve_resume(resume, self.run_dir)
        if checkpoint is not None:
            self._restore(checkpoint)
        if dist.is_main():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.run_dir / "config.yaml")
        self.scalars = ScalarWriter(self.run_dir / "tensorboard" if dist.is_main() else None)

    # ---------------------------------------------------------------- checkpoints
    def _state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "queue": self.queue.state_dict() if self.queue is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "detector": self.detector.state_dict(),
            "fne": self.fne.state_dict() if self.fne is not None else None,
            "epoch": self.epoch,
            "step": self.step,
            "global_step": self.global_step,
            "history": self.history,
            "train_time": self.train_time,
            "rng": rng_state(),
            "config": self.cfg.to_dict(),
        }

    def save(self, name: str = "last.pt") -> None:
        if dist.is_main():
            save_checkpoint(self._state(), self.run_dir / "checkpoints" / name)
        dist.barrier()

    def _restore(self, path: Path) -> None:
        state = load_checkpoint(path)
        check_compatible(state.get("config", {}), self.cfg)
        self.model.load_state_dict(state["model"])
        if self.queue is not None:
            self.queue.load_state_dict(state["queue"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.detector.load_state_dict(state["detector"])
        if self.fne is not None:
            self.fne.load_state_dict(state["fne"])
        self.epoch, self.step, self.global_step = state["epoch"], state["step"], state["global_step"]
        self.history, self.train_time = state["history"], state["train_time"]
        set_rng_state(state["rng"])
        if dist.is_main():
            log.info("resumed from %s at epoch %d step %d", path, self.epoch, self.step)

    # ---------------------------------------------------------------- the loop
    def fit(self) -> dict[str, Any]:
        try:
            with self.stop_signals:
                self._loop()
        except (KeyboardInterrupt, Interrupted):
            self.save()
            if dist.is_main():
                log.warning("interrupted at epoch %d step %d; checkpoint saved, resume with --resume auto", self.epoch, self.step)
            raise
        finally:
            self.scalars.close()
        return self.write_metrics()

    def _loop(self) -> None:
        cfg = self.cfg
        while self.epoch < cfg.train.epochs:
            record: dict[str, Any] = {"epoch": self.epoch}
            if self.step == 0 and self.detector.wants_round(self.epoch):
                record.update(self.clustering_round())
            record.update(self.train_one_epoch())
            self.epoch, self.step = self.epoch + 1, 0
            if cfg.knn.every and self.epoch % cfg.knn.every == 0 or self.epoch == cfg.train.epochs:
                record.update(self.knn_monitor())
            self.history.append(record)
            self.scalars.add(record, self.epoch, "epoch")
            self.save()
            self.write_metrics()

    def train_one_epoch(self) -> dict[str, float]:
        cfg = self.cfg
        self.views.set_epoch(self.epoch)
        self.sampler.set_epoch(self.epoch, self.step)
        if self.fne is not None and self.step == 0:
            self.fne.start_epoch(self.epoch)
        loader = train_loader(self.views, self.sampler, cfg.data.num_workers, self.device.type == "cuda")
        self.ddp.train()
        amp = cfg.train.amp and self.device.type == "cuda"
        loss_sum, counts, images, start = 0.0, PairCounts(0, 0, 0), 0, time.perf_counter()
        detecting = self.detector.active
        bar = tqdm(loader, desc=f"epoch {self.epoch}", initial=self.step, total=self.sampler.steps_per_epoch,
                   disable=not dist.is_main(), leave=False)
        for (x1, x2), _, ids in bar:
            if dist.any_true(self.stop_at == (self.epoch, self.step) or self.stop_signals.received is not None):
                raise Interrupted  # on every rank at the same step
            x1, x2 = (x.to(self.device, non_blocking=True, memory_format=self.memory_format) for x in (x1, x2))
            ids = ids.to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp):
                out = self._step(x1, x2, ids)
            if not torch.isfinite(out.loss):
                raise TrainingDiverged(
                    f"loss is {out.loss.item()} at epoch {self.epoch} step {self.step}; the last good checkpoint "
                    f"({self.run_dir / 'checkpoints' / 'last.pt'}) is kept. Lower train.lr or raise the temperature, then --resume auto"
                )
            self.optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            if self.detector.needs_bank():
                self.detector.observe(dist.gather(ids), dist.gather(out.embeddings))
            if out.fn_mask is not None:
                labels = self.device_labels
                counts += batch_pair_counts(out.fn_mask, out.anchor_ids, out.candidate_ids,
                                            labels[out.anchor_ids], labels[out.candidate_ids.clamp(min=0)])
            loss_value = dist.mean(out.loss).item()  # the global batch's loss, the same on every rank
            loss_sum += loss_value
            images += x1.shape[0] * self.world
            self.step += 1
            self.global_step += 1
            if self.global_step % cfg.train.log_every_steps == 0:
                self.scalars.add({"loss": loss_value, "lr": self.scheduler.get_last_lr()[0]}, self.global_step, "step")
            bar.set_postfix(loss=f"{loss_value:.3f}")
            if cfg.train.checkpoint_every_steps and self.step % cfg.train.checkpoint_every_steps == 0:
                self.save()
        elapsed = time.perf_counter() - start
        self.train_time += elapsed
        steps_done = max(1, self.sampler.steps_per_epoch - self.sampler.start_step)
        record = {"loss": loss_sum / steps_done, "lr": self.scheduler.get_last_lr()[0],
                  "images_per_s": images / max(elapsed, 1e-9), "epoch_time_s": elapsed}
        counts = PairCounts(*dist.sum_ints([counts.detected, counts.true_positive, counts.actual]))
        if detecting and counts.actual:
            record.update(fn_precision=counts.precision, fn_recall=counts.recall)
        return record

    def _step(self, x1, x2, ids):
        if self.queue is not None:
            # FNE draws of this step and rank: reproducible on resume, different on each rank
            seed = self.cfg.seed * 1_000_003 + self.global_step + self.rank * 1_000_000_007
            generator = torch.Generator(self.device).manual_seed(seed)
            return moco_step(self.model, self.ddp, self.queue, x1, x2, ids, self.detector, self.cfg, self.fne, generator)
        return simclr_step(self.ddp, x1, x2, ids, self.detector, self.cfg)

    def clustering_round(self) -> dict[str, float]:
        """Run the detector's round; every rank ends with the same table (rank 0's)."""
        start = time.perf_counter()
        features = None
        if self.detector.mode == "ifnd" and self.cfg.detection.features == "pass":
            features = self._embed_training_set()
        stats = self.detector.run_round(self.epoch, features) if dist.is_main() else {}
        if self.world > 1:  # every rank masks with rank 0's table
            self.detector.load_table(dist.broadcast_object(self.detector.table_state() if dist.is_main() else None))
            stats = dist.broadcast_object(stats)
        stats["round_time_s"] = time.perf_counter() - start
        if dist.is_main():
            log.info("clustering round before epoch %d: %s", self.epoch, {k: round(v, 4) for k, v in stats.items()})
        return {f"round/{k}": v for k, v in stats.items()}

    def _embed_training_set(self) -> torch.Tensor:
        """``pass`` features: target-encoder embeddings ``[N, D]`` of centre-cropped training images.

        Each rank embeds every world-th sample; the shards are gathered by dataset index.
        """
        total = len(self.train_src)
        shard = list(range(self.rank, total, self.world))
        loader = eval_loader(self.train_src, self.cfg.data.image_size, self.cfg.augment.normalize,
                             self.cfg.train.batch_size, self.cfg.data.num_workers, indices=shard)
        feats, _ = extract_features(_TargetEncoder(self.model), loader, self.device)
        return dist.gather_rows(feats.to(self.device), torch.tensor(shard, device=self.device), total).cpu()

    def knn_monitor(self) -> dict[str, float]:
        if self.test_src is None or not dist.is_main():
            return {}
        cfg = self.cfg
        args = (cfg.data.image_size, cfg.augment.normalize, 256, cfg.data.num_workers)
        train_feats, train_labels = extract_features(self.model.backbone, eval_loader(self.train_src, *args), self.device)
        test_feats, test_labels = extract_features(self.model.backbone, eval_loader(self.test_src, *args), self.device)
        acc = knn_accuracy(train_feats, train_labels, test_feats, test_labels, cfg.knn.k, cfg.knn.temperature)
        return {"knn_top1": acc["top1"], "knn_top5": acc["top5"]}

    # ---------------------------------------------------------------- logging
    def write_metrics(self) -> dict[str, Any]:
        last_knn = next((h for h in reversed(self.history) if "knn_top1" in h), {})
        last_fn = next((h for h in reversed(self.history) if "fn_precision" in h), {})
        metrics = {
            "method": self.cfg.method,
            "detection": self.cfg.detection.mode,
            "epochs_done": self.epoch,
            "knn_top1": last_knn.get("knn_top1", math.nan),
            "knn_top5": last_knn.get("knn_top5", math.nan),
            "fn_precision": last_fn.get("fn_precision", math.nan),
            "fn_recall": last_fn.get("fn_recall", math.nan),
            "accepted_share": self.detector.share,
            "train_time_s": self.train_time,
            "history": self.history,
        }
        if dist.is_main():
            (self.run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        return metrics


class _TargetEncoder(torch.nn.Module):
    """Adapter: ``model.target`` as a module, for :func:`extract_features`."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.target(x)


def pretrain(cfg: Config, resume: str | None = None) -> dict[str, Any]:
    """Train as configured; returns the metrics written to ``metrics.json``."""
    return Trainer(cfg, resume).fit()
