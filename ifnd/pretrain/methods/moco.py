"""``moco``: MoCo v2 (He et al., 2020; Chen et al., 2020): queries against the momentum keys of an
id-keeping queue, optionally re-weighted by the FNE sampler (``negatives.sampler: fne``)."""

from __future__ import annotations

from typing import Any, Callable

import torch
from lightly.transforms import MoCoV2Transform
from torch import nn

from ifnd.falseneg.bayes import FNESampler
from ifnd.falseneg.detectors import Detector
from ifnd.models.contrastive import MoCoModel
from ifnd.models.ring_buffer import IdRingBuffer
from ifnd.pretrain.methods.base import Method
from ifnd.pretrain.steps import StepOutput, moco_step
from ifnd.runtime.seeding import generator


class MoCo(Method):
    """MoCo v2; its extra state is the queue (``moco.queue_size`` keys with their dataset ids, started with random
    unit keys so that the first steps have negatives) and the FNE sampler."""

    name = "moco"
    transform = MoCoV2Transform
    samplers = ("none", "fne")
    embeds_support_views = True  # FNC's memory version: through the momentum encoder, against the queue

    def __init__(self, cfg: Any, device: torch.device, rank: int = 0):
        super().__init__(cfg, device, rank)
        self.queue = IdRingBuffer.from_config(cfg)
        self.queue.fill_random(generator(cfg.seed, "queue"))
        self.queue.to(device)
        self.fne = FNESampler.from_config(cfg)
        if self.fne is not None:
            self.fne.to(device)

    @staticmethod
    def build_model(cfg: Any) -> nn.Module:
        """Backbone + MoCo v2 MLP head, with their momentum copies."""
        backbone, feat_dim = Method.backbone(cfg)
        return MoCoModel(backbone, feat_dim, cfg.model.proj_hidden_dim, cfg.model.proj_dim)

    def start_epoch(self, epoch: int) -> None:
        if self.fne is not None:
            self.fne.start_epoch(epoch)

    def step(self, model: nn.Module, forward: Callable, x1: torch.Tensor, x2: torch.Tensor, ids: torch.Tensor,
             detector: Detector, epoch: int, step: int, support: torch.Tensor | None = None) -> StepOutput:
        # FNE draws of this step and rank: reproducible on resume, different on each rank
        draws = generator(self.cfg.seed, "draws", epoch, step, self.rank, device=self.device)
        return moco_step(model, forward, self.queue, x1, x2, ids, detector, self.cfg, self.objective, self.fne, draws,
                         support)

    def state_dict(self) -> dict[str, Any]:
        return {"queue": self.queue.state_dict(), "fne": self.fne.state_dict() if self.fne is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.queue.load_state_dict(state["queue"])
        if self.fne is not None:
            self.fne.load_state_dict(state["fne"])
