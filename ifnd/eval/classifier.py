"""Supervised classifier training on top of a pretrained encoder, as an engine task.

The linear probe and semi-supervised fine-tuning differ only in what they train (a linear
layer on frozen features, or backbone and head) and on which data; both are a
:class:`ClassifierTask`: cross-entropy with SGD and a per-step cosine decay of every
learning rate to 0, run by the :class:`~ifnd.runtime.loop.Engine` (checkpoints in the
evaluation folder, ``--resume auto``, graceful stop, NaN guard, TensorBoard), then tested
once at the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import BatchSampler, DataLoader, Dataset

from ifnd.runtime import distributed as dist
from ifnd.runtime.loop import Context, Engine, LoopSettings
from ifnd.runtime.run import RunDir
from ifnd.runtime.sampler import ResumableSampler
from ifnd.runtime.stopping import ignore_stop_signals
from ifnd.runtime.schedules import warmup_cosine


@dataclass
class ClassifierSpec:
    """What to train and how to test it.

    Attributes:
        section: the config section of the protocol (``linear`` or ``semisup``): its ``epochs``
            and ``batch_size`` drive the loop.
        build: ``device -> (model, optimizer)``; the model maps inputs to logits ``[B, C]``.
        train_data: cached ``(feats [N, D], labels [N])``, or a dataset of ``(image, label, index)``.
        test: ``model -> {"top1", "top5"}`` on the test split.
        lr_multiplier: ``(step, steps_per_epoch) -> factor`` of every learning rate; None: cosine decay to 0.
    """

    section: str
    build: Callable[[torch.device], tuple[nn.Module, torch.optim.Optimizer]]
    train_data: tuple[Tensor, Tensor] | Dataset
    test: Callable[[nn.Module], dict[str, float]]
    lr_multiplier: Callable[[int, int], float] | None = None


class ClassifierTask:
    """Cross-entropy training of ``spec.build``'s model (see :class:`~ifnd.runtime.loop.Task`)."""

    resume_may_change: ClassVar[tuple[str, ...]] = ()  # the epochs set the cosine schedule's length
    best_key = None

    def __init__(self, ctx: Context, spec: ClassifierSpec):
        self.cfg, self.device, self.spec = ctx.cfg, ctx.device, spec
        section = getattr(ctx.cfg, spec.section)
        self.settings = LoopSettings(section.epochs, section.batch_size, drop_last=ctx.world > 1,
                                     batch_key=f"{spec.section}.batch_size")
        self.model, self.optimizer = spec.build(ctx.device)
        self.forward = dist.wrap_ddp(self.model, ctx.device)  # gradients averaged over the ranks
        data = spec.train_data
        self.num_samples = len(data[1]) if isinstance(data, tuple) else len(data)
        self.correct, self.seen = 0, 0

    def lr_multiplier(self, step: int, steps_per_epoch: int) -> float:
        if self.spec.lr_multiplier is not None:
            return self.spec.lr_multiplier(step, steps_per_epoch)
        return warmup_cosine(step, self.settings.epochs * steps_per_epoch, 0)

    def loader(self, sampler: ResumableSampler, epoch: int) -> Iterable[Any]:
        data = self.spec.train_data
        if isinstance(data, tuple):  # in-memory features: index them, no per-sample loader overhead
            feats, labels = data
            return ((feats[b], labels[b]) for b in BatchSampler(sampler, self.settings.batch_size, drop_last=False))
        if hasattr(data, "set_epoch"):  # per-sample seeded augmentation (IndexedViews)
            data.set_epoch(epoch)
        return DataLoader(data, batch_size=self.settings.batch_size, sampler=sampler,
                          num_workers=self.cfg.data.num_workers, pin_memory=self.device.type == "cuda",
                          worker_init_fn=ignore_stop_signals)

    def start_epoch(self, epoch: int, step: int) -> dict[str, Any]:
        self.correct, self.seen = 0, 0
        return {}

    def step(self, batch: Any, epoch: int, step: int) -> torch.Tensor:
        inputs, labels = batch[0].to(self.device, non_blocking=True), batch[1].to(self.device, non_blocking=True)
        logits = self.forward(inputs)
        self.correct += int((logits.argmax(1) == labels).sum())
        self.seen += len(labels)
        return F.cross_entropy(logits, labels)

    def after_step(self) -> None:
        pass

    def end_epoch(self, epochs_done: int) -> dict[str, Any]:
        return {"train_top1": 100.0 * self.correct / max(1, self.seen)}

    def evaluate(self, epochs_done: int) -> dict[str, Any]:
        if epochs_done == self.settings.epochs:
            return {f"test_{k}": v for k, v in self.spec.test(self.model).items()}
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def summary(self, history: list[dict[str, Any]]) -> dict[str, Any]:
        last = history[-1] if history else {}
        return {"top1": last.get("test_top1", float("nan")), "top5": last.get("test_top5", float("nan"))}


def fit_classifier(cfg: Any, spec: ClassifierSpec, run: RunDir | None = None,
                   resume: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Train and test as ``spec`` says; returns the model and the metrics (``top1``, ``top5``, ``history``, ...)."""
    engine = Engine(cfg, lambda ctx, saved: ClassifierTask(ctx, spec), resume,
                    resume_may_change=ClassifierTask.resume_may_change, run=run)
    metrics = engine.fit()
    return engine.task.model, metrics
