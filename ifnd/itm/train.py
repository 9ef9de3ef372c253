"""Image-text matching training (``itm-train``) as an engine task.

:class:`ITMTask` loads the training (and validation) split, builds or restores the
vocabulary and architecture, the model, the negative mining (FNE or hardest, with its
memory) and Adam; each step is :func:`~ifnd.itm.step.itm_step`; each epoch ends with
validation R@K (``best.pt`` keeps the best ``val/rsum``). The loop, checkpoints, mid-epoch
resume, graceful stop and logging are the :class:`~ifnd.runtime.loop.Engine`'s.

Under ``torchrun`` each rank takes its block of ``train.batch_size`` pairs of every global
batch (:class:`~ifnd.runtime.sampler.ResumableSampler`) and
:func:`~ifnd.itm.step.itm_step` gathers the momentum embeddings of all ranks; rank 0
validates and the result is broadcast, so every rank agrees on ``best.pt``.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Iterable

import torch
from torch.utils.data import DataLoader

from ifnd.itm.data import (
    PairDataset,
    caption_density,
    collate_pairs,
    feature_shape,
    image_transform,
    load_split,
    load_train_split,
    validation_split,
)
from ifnd.itm.evaluate import evaluate_split
from ifnd.itm.fne_monitor import FNEMonitor
from ifnd.itm.model import Architecture, build_itm_model, load_backbone_weights, read_pretrained_backbone
from ifnd.itm.objective import TripletOutput
from ifnd.itm.step import NegativeMining, itm_step
from ifnd.itm.text import Vocabulary
from ifnd.runtime import distributed as dist
from ifnd.runtime.loop import Context, Engine, LoopSettings
from ifnd.runtime.sampler import ResumableSampler
from ifnd.runtime.stopping import ignore_stop_signals
from ifnd.runtime.schedules import scaled_lr, step_decay
from ifnd.runtime.seeding import generator

log = logging.getLogger(__name__)


class ITMTask:
    """All state of one image-text matching run but the loop's (see :class:`~ifnd.runtime.loop.Task`)."""

    # The step decay is set by train.lr_decay_epochs, not by the length of the run: it may be extended.
    resume_may_change: ClassVar[tuple[str, ...]] = ("train.epochs",)
    best_key = "val/rsum"

    def __init__(self, ctx: Context, saved: dict[str, Any] | None = None):
        cfg = self.cfg = ctx.cfg
        self.ctx, self.device = ctx, ctx.device
        self.settings = LoopSettings.from_train(cfg.train)
        self.train_split = load_train_split(cfg)
        self.val_split = load_split(cfg, validation_split(cfg)) if cfg.data.val_split else None
        self.data_density = {name: density for name, split in (("train", self.train_split), ("val", self.val_split))
                             if split is not None and (density := caption_density(split))}
        for name, density in self.data_density.items():
            log.info("%s captions fit %.1f images on average; %.2f%% of a caption's candidate images and %.2f%% of "
                     "an image's candidate captions fit the anchor", name, density["images_per_caption"],
                     100 * density["fn_share_t2i"], 100 * density["fn_share_i2t"])
        pretrained = None
        if saved is not None:
            self.vocab = Vocabulary.from_list(saved["vocab"])
            self.arch = Architecture.from_dict(saved["architecture"])
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
        self.mining = NegativeMining.from_config(cfg, ctx.world).to(self.device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        lr = scaled_lr(cfg.train.lr, cfg.train.batch_size * ctx.world, cfg.train.lr_scaling)
        self.optimizer = torch.optim.Adam(params, lr=lr, weight_decay=cfg.train.weight_decay)
        self.pairs = PairDataset(self.train_split, image_transform(cfg, train=True), self.vocab, seed=cfg.seed)
        self.num_samples = len(self.pairs)
        self.labels = None if self.train_split.labels is None else torch.from_numpy(self.train_split.labels).to(self.device)
        self.same_class, self.drawn = 0, 0
        self.fne_monitor = FNEMonitor() if self.mining.kind == "fne" else None
        self.out: TripletOutput | None = None
        self.ids: torch.Tensor | None = None  # [B] image ids of the last step's pairs

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

    # ---------------------------------------------------------------- engine hooks
    def lr_multiplier(self, step: int, steps_per_epoch: int) -> float:
        return step_decay(step, steps_per_epoch, self.cfg.train.lr_decay, self.cfg.train.lr_decay_epochs)

    def loader(self, sampler: ResumableSampler, epoch: int) -> Iterable[Any]:
        self.pairs.set_epoch(epoch)
        return DataLoader(self.pairs, batch_size=self.cfg.train.batch_size, sampler=sampler,
                          num_workers=self.cfg.data.num_workers, collate_fn=collate_pairs,
                          pin_memory=self.device.type == "cuda", drop_last=True, worker_init_fn=ignore_stop_signals)

    def start_epoch(self, epoch: int, step: int) -> dict[str, Any]:
        if step == 0:  # a resumed epoch keeps the statistics saved with it
            self.mining.start_epoch(epoch)
        self.same_class, self.drawn = 0, 0
        if self.fne_monitor is not None:
            self.fne_monitor.reset()
        return {}

    def step(self, batch: Any, epoch: int, step: int) -> torch.Tensor:
        images, tokens, lengths, ids = batch
        tokens, ids = tokens.to(self.device, non_blocking=True), ids.to(self.device, non_blocking=True)
        images = images.to(self.device, non_blocking=True, memory_format=self.memory_format)
        # negative draws of this step and rank: reproducible on resume, different on each rank
        self.mining.generator = generator(self.cfg.seed, "draws", epoch, step, self.ctx.rank, device=self.device)
        self.out, self.ids = itm_step(self.model, self.mining, images, tokens, lengths, ids, self.ddp), ids
        return self.out.loss

    def after_step(self) -> None:
        labels = self.labels
        if labels is not None:
            negatives = torch.cat([self.out.i2t_negative_ids, self.out.t2i_negative_ids], dim=1)
            self.same_class += int((labels[negatives] == labels[self.ids].unsqueeze(1)).sum())
            self.drawn += negatives.numel()
        if self.fne_monitor is not None:
            same = None if labels is None else labels[self.ids].unsqueeze(1) == labels[self.out.candidate_ids].unsqueeze(0)
            for draws, positive, ready in self.mining.draws:
                self.fne_monitor.observe(draws, positive, ready, same)

    def end_epoch(self, epochs_done: int) -> dict[str, Any]:
        record: dict[str, Any] = {}
        same_class, drawn = dist.sum_ints([self.same_class, self.drawn])
        if self.fne_monitor is not None:
            record.update(self.fne_monitor.record(self.mining.sampler.stats))
        if drawn:
            record["same_class_negatives_pct"] = 100.0 * same_class / drawn
        return record

    def evaluate(self, epochs_done: int) -> dict[str, float]:
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

    def state_dict(self) -> dict[str, Any]:
        return {"mining": self.mining.state_dict(), "vocab": self.vocab.to_list(), "architecture": self.arch.to_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mining.load_state_dict(state["mining"])

    def summary(self, history: list[dict[str, Any]]) -> dict[str, Any]:
        last = history[-1] if history else {}
        return {
            "sampler": self.cfg.negatives.sampler,
            "use_memory": self.cfg.negatives.use_memory,
            "data_density": self.data_density,
            "val": {k[4:]: v for k, v in last.items() if k.startswith("val/")},
        }


def itm_train(cfg: Any, resume: str | None = None, stop_at: tuple[int, int] | None = None,
              overwrite: bool = False) -> dict[str, Any]:
    """Train as configured; returns the metrics written to ``metrics.json``."""
    return Engine(cfg, ITMTask, resume, stop_at, overwrite=overwrite).fit()
