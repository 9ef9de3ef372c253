"""SimCLR and MoCo v2 models: a backbone, lightly's projection head, and for MoCo a
momentum copy of both (updated with lightly's ``update_momentum``).

Both return L2-normalised embeddings ``[B, proj_dim]``. A method builds its model
(:func:`ifnd.pretrain.methods.build_model`).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from lightly.models.modules.heads import MoCoProjectionHead, SimCLRProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from torch import nn


class SimCLRModel(nn.Module):
    """Backbone + SimCLR projection head (Chen et al., 2020)."""

    def __init__(self, backbone: nn.Module, feat_dim: int, hidden_dim: int, proj_dim: int, batch_norm: bool = True):
        super().__init__()
        self.backbone = backbone
        self.head = SimCLRProjectionHead(feat_dim, hidden_dim, proj_dim, batch_norm=batch_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``[B, 3, S, S]`` -> normalised embeddings ``[B, proj_dim]``."""
        return F.normalize(self.head(self.backbone(x)), dim=1)

    @torch.no_grad()
    def target(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings without gradient: what clustering sees (SimCLR has no momentum encoder)."""
        return self(x)

    @property
    def target_backbone(self) -> nn.Module:
        """The backbone whose features clustering sees with ``detection.embedding=backbone``."""
        return self.backbone


class MoCoModel(nn.Module):
    """Backbone + MoCo v2 MLP head, with a momentum (key) encoder (He et al., 2020; Chen et al., 2020)."""

    def __init__(self, backbone: nn.Module, feat_dim: int, hidden_dim: int, proj_dim: int, batch_norm: bool = False):
        super().__init__()
        self.backbone = backbone
        self.head = MoCoProjectionHead(feat_dim, hidden_dim, proj_dim, batch_norm=batch_norm)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.head_momentum = copy.deepcopy(self.head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.head_momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Queries: images ``[B, 3, S, S]`` -> normalised embeddings ``[B, proj_dim]``."""
        return F.normalize(self.head(self.backbone(x)), dim=1)

    @torch.no_grad()
    def momentum_update(self, momentum: float) -> None:
        update_momentum(self.backbone, self.backbone_momentum, m=momentum)
        update_momentum(self.head, self.head_momentum, m=momentum)

    @torch.no_grad()
    def target(self, x: torch.Tensor) -> torch.Tensor:
        """Keys from the momentum encoder: ``[B, 3, S, S]`` -> ``[B, proj_dim]``."""
        return F.normalize(self.head_momentum(self.backbone_momentum(x)), dim=1)

    @property
    def target_backbone(self) -> nn.Module:
        """The momentum backbone, whose features clustering sees with ``detection.embedding=backbone``."""
        return self.backbone_momentum

