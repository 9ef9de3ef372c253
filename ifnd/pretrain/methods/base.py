"""The :class:`Method` interface: what one contrastive method brings to pretraining.

A method names its lightly two-view transform, builds its model, owns its extra state (MoCo's
queue and FNE sampler) and runs one training step; :class:`~ifnd.pretrain.task.PretrainTask`
uses only this interface.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

import torch
from torch import nn

from ifnd.config import ConfigError
from ifnd.falseneg.detectors import Detector
from ifnd.models.backbones import build_backbone
from ifnd.objectives import build_objective
from ifnd.pretrain.steps import StepOutput


class Method:
    """One contrastive method.

    Args:
        cfg: the run's config.
        device: the training device (where the extra state lives).
        rank: this process's rank (its own random draws).
    """

    name: ClassVar[str]
    transform: ClassVar[type]  # lightly's two-view transform (SimCLRTransform, MoCoV2Transform)
    samplers: ClassVar[tuple[str, ...]] = ("none",)  # the negatives.sampler values it supports
    embeds_support_views: ClassVar[bool] = False  # whether its step embeds a detector's support views

    def __init__(self, cfg: Any, device: torch.device, rank: int = 0):
        if cfg.negatives.sampler not in self.samplers:
            raise ConfigError(f"pretraining supports negatives.sampler=none, or fne with method=moco (it re-weights "
                              f"the MoCo queue); got negatives.sampler={cfg.negatives.sampler} with method={self.name}")
        self.cfg, self.device, self.rank = cfg, device, rank
        self.objective = build_objective(cfg)

    @staticmethod
    def backbone(cfg: Any) -> tuple[nn.Module, int]:
        """The backbone of ``cfg.model`` and its feature width."""
        return build_backbone(cfg.model.backbone, cfg.model.cifar_stem, cfg.model.norm)

    @staticmethod
    def build_model(cfg: Any) -> nn.Module:
        """The model on the backbone of ``cfg.model``; ``forward`` gives normalised embeddings ``[B, D]``, ``target``
        the embeddings that clustering sees, ``target_backbone`` the backbone whose features it sees."""
        raise NotImplementedError

    def check_detector(self, detector: Detector) -> None:
        """A ConfigError when ``detector`` needs what this method's step does not give it (support views)."""
        if detector.support_views and not self.embeds_support_views:
            raise ConfigError(f"detection.mode={self.cfg.detection.mode} needs support views, which method={self.name} "
                              "does not embed: use method=simclr, or another detection.mode")

    def start_epoch(self, epoch: int) -> None:
        """The training epoch that begins (at its first step, not on a mid-epoch resume)."""

    def step(self, model: nn.Module, forward: Callable, x1: torch.Tensor, x2: torch.Tensor, ids: torch.Tensor,
             detector: Detector, epoch: int, step: int, support: torch.Tensor | None = None) -> StepOutput:
        """One step's loss on views ``x1, x2 [B, 3, S, S]`` of samples ``ids [B]``; ``forward`` is ``model`` or its
        DDP wrapper; ``support [B, V, 3, S, S]``: the detector's support views (where it asks for them)."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """The extra state, merged into the task's checkpoint state (keys of its own)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take the extra state from the task's checkpoint state."""
