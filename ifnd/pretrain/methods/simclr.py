"""``simclr``: SimCLR (Chen et al., 2020): NT-Xent over the 2N views of the global batch."""

from __future__ import annotations

from typing import Any, Callable

import torch
from lightly.transforms import SimCLRTransform
from torch import nn

from ifnd.falseneg.detectors import Detector
from ifnd.models.contrastive import SimCLRModel
from ifnd.pretrain.methods.base import Method
from ifnd.pretrain.steps import StepOutput, simclr_step


class SimCLR(Method):
    """SimCLR: no extra state."""

    name = "simclr"
    transform = SimCLRTransform
    embeds_support_views = True

    @staticmethod
    def build_model(cfg: Any) -> nn.Module:
        """Backbone + SimCLR head; the head has BatchNorm unless the model is batch-independent (``model.norm``)."""
        backbone, feat_dim = Method.backbone(cfg)
        return SimCLRModel(backbone, feat_dim, cfg.model.proj_hidden_dim, cfg.model.proj_dim, cfg.model.norm == "batch")

    def step(self, model: nn.Module, forward: Callable, x1: torch.Tensor, x2: torch.Tensor, ids: torch.Tensor,
             detector: Detector, epoch: int, step: int, support: torch.Tensor | None = None) -> StepOutput:
        return simclr_step(forward, x1, x2, ids, detector, self.cfg, self.objective, model, support)
