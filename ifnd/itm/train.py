"""Image-text matching training loop (``itm-train``).

Read top to bottom: :class:`ITMTrainer` loads the training (and validation) split,
builds or restores the vocabulary, model, negative mining and optimizer, then
:meth:`ITMTrainer.fit` loops over epochs: :meth:`~ITMTrainer.train_one_epoch`
(one :func:`~ifnd.itm.step.itm_step` per batch), validation R@K, an atomic checkpoint
(``last.pt``, and ``best.pt`` on a better validation RSUM) and ``metrics.json``.
Runs resume at epoch boundaries (``--resume auto``); the caption order of an epoch
depends only on ``(seed, epoch)``, its augmentations and negative draws only on
``(seed, epoch, rank)``.

Under ``torchrun`` every rank takes ``train.batch_size`` pairs of each global batch
(:func:`rank_batches`) and :func:`~ifnd.itm.step.itm_step` gathers the momentum
embeddings of all ranks; rank 0 validates, logs and writes checkpoints. Adam's
``train.lr`` is not rescaled with the global batch.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ifnd.config import Config, ConfigError, save_config
from ifnd.itm.data import (
    PairDataset,
    collate_pairs,
    feature_shape,
    image_transform,
    load_split,
    load_train_split,
)
from ifnd.itm.evaluate import evaluate_split
from ifnd.itm.model import (
    Architecture,
    build_itm_model,
    load_backbone_weights,
    read_pretrained_backbone,
)
from ifnd.itm.step import NegativeMining, itm_step
from ifnd.itm.text import Vocabulary
from ifnd.train import distributed as dist
from ifnd.train.checkpoint import CheckpointError, load_checkpoint, resolve_resume, save_checkpoint
from ifnd.train.scalars import ScalarWriter
from ifnd.train.pretrain import TrainingDiverged, pick_device, seed_everything

log = logging.getLogger(__name__)

# Keys a resumed run must share with the checkpoint (weights, memory and vocabulary depend on them).
RESUME_KEYS = (
    "data.name", "data.train_splits", "data.max_train_images", "text.min_count", "text.word_dim", "text.hidden_dim",
    "text.num_layers", "text.pooling", "model.embed_dim", "model.backbone", "model.cifar_stem",
    "model.image_checkpoint", "model.feature_hidden_dim", "negatives.sampler", "negatives.use_memory",
    "negatives.memory_size",
)


def lr_at_epoch(epoch: int, base_lr: float, decay: float, milestones: list[int]) -> float:
    """``base_lr`` times ``decay`` for every milestone epoch ``<= epoch``."""
    return base_lr * decay ** sum(epoch >= m for m in milestones)


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """Seed of one rank's randomness in one epoch (rank 0 also orders the captions with it)."""
    return seed * 100_003 + epoch + rank * 1_000_003


def rank_batches(order: torch.Tensor, batch_size: int, world_size: int, rank: int) -> torch.Tensor:
    """This rank's share of an epoch's ``order [steps * world_size * batch_size]``.

    Global batch ``s`` is ``order[s * G:(s + 1) * G]`` with ``G = world_size * batch_size``;
    rank ``r`` takes its ``r``-th block of ``batch_size``, so gathering the ranks' batches in
    rank order gives back the global batch. Returns ``[steps * batch_size]``.
    """
    return order.view(-1, world_size, batch_size)[:, rank].reshape(-1)


def check_resumable(saved: dict[str, Any], cfg: Config) -> None:
    """Refuse a checkpoint whose :data:`RESUME_KEYS` differ from the current config."""
    saved_cfg = Config(saved)
    for key in RESUME_KEYS:
        if saved_cfg.get(key) != cfg.get(key):
            raise CheckpointError(
                f"checkpoint was written with {key}={saved_cfg.get(key)!r} but the config says {cfg.get(key)!r}; "
                f"use a matching config or a fresh output_dir"
            )


class ITMTrainer:
    """All state of one image-text matching run; :meth:`fit` is the loop."""

    def __init__(self, cfg: Config, resume: str | None = None):
        self.cfg = cfg
        self.rank, self.world, local_rank = dist.init()
        self.device = pick_device(cfg.device, local_rank)
        self.run_dir = Path(cfg.output_dir)
        seed_everything(cfg.seed)
        self.train_split = load_train_split(cfg)
        self.val_split = load_split(cfg, cfg.data.val_split) if cfg.data.val_split else None

        checkpoint = resolve_resume(resume, self.run_dir)
        state = load_checkpoint(checkpoint) if checkpoint is not None else None
        pretrained = None
        if state is not None:
            check_resumable(state["config"], cfg)
            self.vocab = Vocabulary.from_list(state["vocab"])
            self.arch = Architecture.from_dict(state["architecture"])
        else:
            self.vocab = Vocabulary.build(self.train_split.captions, cfg.text.min_count)
            self.arch, pretrained = self._architecture()
        self.model = build_itm_model(cfg, self.arch)
        if pretrained is not None:
            load_backbone_weights(self.model, pretrained)
        cuda = self.device.type == "cuda"
        self.model.image_autocast = torch.bfloat16 if cfg.train.amp and cuda else None
        self.memory_format = torch.channels_last if cfg.train.channels_last and cuda and self.arch.feature_dim is None \
            else torch.contiguous_format
        self.model.to(self.device, memory_format=self.memory_format)
        self.ddp = dist.wrap_ddp(self.model, self.device)
        self.mining = NegativeMining.from_config(cfg, self.world).to(self.device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
        self.pairs = PairDataset(self.train_split, image_transform(cfg, train=True), self.vocab)
        self.global_batch = cfg.train.batch_size * self.world
        self.steps_per_epoch = len(self.pairs) // self.global_batch
        if self.steps_per_epoch == 0:
            raise ConfigError(f"the global batch (train.batch_size={cfg.train.batch_size} x {self.world} processes) "
                              f"exceeds the {len(self.pairs)} training pairs")

        self.epoch, self.global_step, self.train_time = 0, 0, 0.0
        self.best_rsum = -math.inf
        self.history: list[dict[str, Any]] = []
        if state is not None:
            self._restore(state)
            if dist.is_main():
                log.info("resumed from %s at epoch %d", checkpoint, self.epoch)
        if dist.is_main():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.run_dir / "config.yaml")
        self.scalars = ScalarWriter(self.run_dir / "tensorboard" if dist.is_main() else None)

    def _architecture(self) -> tuple[Architecture, dict[str, torch.Tensor] | None]:
        """The image side's architecture, and pretrained backbone weights when configured."""
        cfg = self.cfg
        if cfg.data.name == "features":
            return Architecture(len(self.vocab), feature_dim=feature_shape(self.train_split)[-1]), None
        if cfg.model.image_checkpoint:
            backbone, cifar_stem, weights = read_pretrained_backbone(cfg.model.image_checkpoint)
            log.info("image backbone %s (cifar_stem=%s) from %s", backbone, cifar_stem, cfg.model.image_checkpoint)
            return Architecture(len(self.vocab), backbone, cifar_stem), weights
        return Architecture(len(self.vocab), cfg.model.backbone, cfg.model.cifar_stem), None

    # ---------------------------------------------------------------- checkpoints
    def _state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "mining": self.mining.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "global_step": self.global_step,
            "best_rsum": self.best_rsum,
            "history": self.history,
            "train_time": self.train_time,
            "config": self.cfg.to_dict(),
            "vocab": self.vocab.to_list(),
            "architecture": self.arch.to_dict(),
        }

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.mining.load_state_dict(state["mining"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.global_step = state["epoch"], state["global_step"]
        self.best_rsum, self.history, self.train_time = state["best_rsum"], state["history"], state["train_time"]

    def save(self, name: str) -> None:
        if dist.is_main():
            save_checkpoint(self._state(), self.run_dir / "checkpoints" / name)
        dist.barrier()

    # ---------------------------------------------------------------- the loop
    def fit(self) -> dict[str, Any]:
        """Train the remaining epochs; returns what ``metrics.json`` holds."""
        try:
            while self.epoch < self.cfg.train.epochs:
                record: dict[str, Any] = {"epoch": self.epoch, **self.train_one_epoch(), **self.validate()}
                self.epoch += 1
                self.history.append(record)
                self.scalars.add(record, self.epoch, "epoch")
                self.save("last.pt")
                if record.get("val/rsum", -math.inf) > self.best_rsum:
                    self.best_rsum = record["val/rsum"]
                    self.save("best.pt")
                self.write_metrics()
        finally:
            self.scalars.close()
        return self.write_metrics()

    def validate(self) -> dict[str, float]:
        """``val/*`` R@K and RSUM, computed on rank 0 and sent to every rank (so all agree on best.pt)."""
        if self.val_split is None:
            return {}
        val = {}
        if dist.is_main():
            autocast, self.model.image_autocast = self.model.image_autocast, None  # float32, as itm-eval embeds
            metrics = evaluate_split(self.model, self.val_split, self.vocab, self.cfg, self.device)
            self.model.image_autocast = autocast
            val = {f"val/{k}": v for k, v in metrics.items() if k != "folds"}
        return dist.broadcast_object(val)

    def _loader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(epoch_seed(self.cfg.seed, self.epoch))
        order = torch.randperm(len(self.pairs), generator=generator)[: self.steps_per_epoch * self.global_batch]
        mine = rank_batches(order, self.cfg.train.batch_size, self.world, self.rank)
        torch.manual_seed(epoch_seed(self.cfg.seed, self.epoch, self.rank))  # augmentations and loader workers
        return DataLoader(self.pairs, batch_size=self.cfg.train.batch_size, sampler=mine.tolist(),
                          num_workers=self.cfg.data.num_workers, collate_fn=collate_pairs,
                          pin_memory=self.device.type == "cuda", drop_last=True)

    def train_one_epoch(self) -> dict[str, float]:
        cfg = self.cfg
        lr = lr_at_epoch(self.epoch, cfg.train.lr, cfg.train.lr_decay, cfg.train.lr_decay_epochs)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.mining.start_epoch(self.epoch, self.rank)
        labels = None if self.train_split.labels is None else torch.from_numpy(self.train_split.labels).to(self.device)
        self.model.train()
        loss_sum, same_class, drawn, start = 0.0, 0, 0, time.perf_counter()
        bar = tqdm(self._loader(), desc=f"epoch {self.epoch}", total=self.steps_per_epoch, leave=False,
                   disable=not dist.is_main())
        for images, tokens, lengths, ids in bar:
            tokens, ids = tokens.to(self.device, non_blocking=True), ids.to(self.device, non_blocking=True)
            images = images.to(self.device, non_blocking=True, memory_format=self.memory_format)
            out = itm_step(self.model, self.mining, images, tokens, lengths, ids, self.ddp)
            loss = dist.mean(out.loss).item()  # the global batch's loss, the same on every rank
            if not math.isfinite(loss):
                raise TrainingDiverged(f"loss is {loss} at epoch {self.epoch}; lower train.lr, then --resume auto")
            self.optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            if cfg.train.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.train.grad_clip)
            self.optimizer.step()
            if labels is not None:
                negatives = torch.cat([out.i2t_negative_ids, out.t2i_negative_ids], dim=1)
                same_class += int((labels[negatives] == labels[ids].unsqueeze(1)).sum())
                drawn += negatives.numel()
            loss_sum += loss
            self.global_step += 1
            if self.global_step % cfg.train.log_every_steps == 0:
                self.scalars.add({"loss": loss}, self.global_step, "step")
            bar.set_postfix(loss=f"{loss:.3f}")
        elapsed = time.perf_counter() - start
        self.train_time += elapsed
        same_class, drawn = dist.sum_ints([same_class, drawn])
        stats = self.mining.sampler.stats
        record = {"loss": loss_sum / self.steps_per_epoch, "lr": lr, "epoch_time_s": elapsed,
                  "pairs_per_s": self.steps_per_epoch * self.global_batch / max(elapsed, 1e-9)}
        if self.mining.kind == "fne":
            record.update(fne_pos_mean=stats.pos_mean, fne_neg_mean=stats.neg_mean, fne_reliable_pairs=int(stats.count[0]))
        if drawn:
            record["same_class_negatives_pct"] = 100.0 * same_class / drawn
        return record

    # ---------------------------------------------------------------- logging
    def write_metrics(self) -> dict[str, Any]:
        last = self.history[-1] if self.history else {}
        metrics = {
            "sampler": self.cfg.negatives.sampler,
            "use_memory": self.cfg.negatives.use_memory,
            "epochs_done": self.epoch,
            "val": {k[4:]: v for k, v in last.items() if k.startswith("val/")},
            "best_val_rsum": self.best_rsum if math.isfinite(self.best_rsum) else None,
            "train_time_s": self.train_time,
            "history": self.history,
        }
        if dist.is_main():
            (self.run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        return metrics


def itm_train(cfg: Config, resume: str | None = None) -> dict[str, Any]:
    """Train as configured; returns the metrics written to ``metrics.json``."""
    return ITMTrainer(cfg, resume).fit()
