"""Image and text encoders into one L2-normalised joint space, with momentum copies.

* :class:`ImageEncoder`: a backbone (fresh, or from an ``ifnd pretrain`` checkpoint)
  and a linear projection;
* :class:`FeatureEncoder`: an MLP on each precomputed feature (global ``[D]`` or
  regions ``[R, D]``), mean-pooled over regions;
* :class:`ITMModel`: both encoders plus EMA copies (lightly's ``update_momentum``)
  whose embeddings fill the :class:`~ifnd.models.ring_buffer.IdRingBuffer`.

:class:`Architecture` records what the checkpoint's weights need (the backbone of a
pretraining checkpoint, the vocabulary and feature sizes), so evaluation rebuilds the
model without the pretraining checkpoint or the training data.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from lightly.models.utils import deactivate_requires_grad, update_momentum
from torch import Tensor, nn

from ifnd.config import ConfigError, resolve
from ifnd.itm.text import GRUTextEncoder
from ifnd.models.backbones import build_backbone
from ifnd.runtime.checkpoint import CheckpointError, load_checkpoint

BACKBONE_PREFIX = "backbone."


@dataclass(frozen=True)
class Architecture:
    """Shapes the model weights depend on beyond the config.

    Attributes:
        vocab_size: words in the vocabulary.
        backbone: image backbone name, or None for precomputed features.
        cifar_stem: the backbone's small-image stem (ResNets).
        feature_dim: width ``D`` of precomputed features, or None for images.
    """

    vocab_size: int
    backbone: str | None = None
    cifar_stem: bool = False
    feature_dim: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Architecture":
        return cls(**values)


def read_pretrained_backbone(path: str) -> tuple[str, bool, dict[str, Tensor]]:
    """Backbone name, cifar stem and backbone weights of an ``ifnd pretrain`` checkpoint.

    Raises:
        CheckpointError: missing or unreadable file, or no config / backbone weights in it.
    """
    state = load_checkpoint(path)
    if not isinstance(state.get("config"), dict) or not isinstance(state.get("model"), dict):
        raise CheckpointError(f"{path} is not an `ifnd pretrain` checkpoint (no 'config' and 'model' entries)")
    try:
        cfg = resolve(state["config"], where=str(path))
    except ConfigError as err:
        raise CheckpointError(f"the config stored in {path} is not a pretraining config ({err})") from err
    weights = {k[len(BACKBONE_PREFIX):]: v for k, v in state["model"].items() if k.startswith(BACKBONE_PREFIX)}
    if not weights:
        raise CheckpointError(f"{path} holds no '{BACKBONE_PREFIX}*' weights")
    return cfg.model.backbone, cfg.model.cifar_stem, weights


class ImageEncoder(nn.Module):
    """Backbone + linear projection: images ``[B, 3, S, S]`` -> normalised ``[B, embed_dim]``."""

    def __init__(self, backbone: nn.Module, feat_dim: int, embed_dim: int):
        super().__init__()
        self.backbone = backbone
        self.proj = nn.Linear(feat_dim, embed_dim)

    def forward(self, images: Tensor) -> Tensor:
        return F.normalize(self.proj(self.backbone(images)), dim=1)


class FeatureEncoder(nn.Module):
    """Two-layer MLP per precomputed feature, mean over regions, L2 norm.

    Input ``[B, D]`` or ``[B, R, D]``; output ``[B, embed_dim]``.
    """

    def __init__(self, feature_dim: int, hidden_dim: int, embed_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(feature_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, embed_dim))

    def forward(self, feats: Tensor) -> Tensor:
        regions = feats if feats.dim() == 3 else feats.unsqueeze(1)
        return F.normalize(self.mlp(regions).mean(dim=1), dim=1)


class ITMModel(nn.Module):
    """Online image/text encoders and their momentum copies (no gradient)."""

    def __init__(self, image_encoder: nn.Module, text_encoder: nn.Module):
        super().__init__()
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.image_encoder_momentum = copy.deepcopy(image_encoder)
        self.text_encoder_momentum = copy.deepcopy(text_encoder)
        deactivate_requires_grad(self.image_encoder_momentum)
        deactivate_requires_grad(self.text_encoder_momentum)
        self.image_autocast: torch.dtype | None = None
        """``torch.bfloat16``: run the image encoders under autocast (GPU training). The text
        GRU, the embeddings and everything computed from them stay float32."""

    def _embed_images(self, encoder: nn.Module, images: Tensor) -> Tensor:
        dtype = self.image_autocast
        with torch.autocast(images.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            embeddings = encoder(images)
        return F.normalize(embeddings.float(), dim=1)

    def forward(self, images: Tensor, tokens: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Online embeddings ``(images [B, E], captions [B, E])``, normalised, float32."""
        return self._embed_images(self.image_encoder, images), self.text_encoder(tokens, lengths)

    @torch.no_grad()
    def momentum_forward(self, images: Tensor, tokens: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Momentum embeddings ``(images [B, E], captions [B, E])``, normalised, float32, no gradient."""
        return self._embed_images(self.image_encoder_momentum, images), self.text_encoder_momentum(tokens, lengths)

    @torch.no_grad()
    def momentum_update(self, momentum: float) -> None:
        """EMA step of both momentum encoders: ``ema = m * ema + (1 - m) * online``."""
        update_momentum(self.image_encoder, self.image_encoder_momentum, m=momentum)
        update_momentum(self.text_encoder, self.text_encoder_momentum, m=momentum)


def build_itm_model(cfg: Any, arch: Architecture) -> ITMModel:
    """Randomly initialised model for ``arch`` with the widths of ``cfg.text`` / ``cfg.model``."""
    embed = cfg.model.embed_dim
    if arch.feature_dim is not None:
        image_encoder: nn.Module = FeatureEncoder(arch.feature_dim, cfg.model.feature_hidden_dim, embed)
    else:
        backbone, feat_dim = build_backbone(arch.backbone, arch.cifar_stem)
        image_encoder = ImageEncoder(backbone, feat_dim, embed)
    text = cfg.text
    text_encoder = GRUTextEncoder(arch.vocab_size, text.word_dim, text.hidden_dim, embed, text.num_layers, text.pooling)
    return ITMModel(image_encoder, text_encoder)


def load_backbone_weights(model: ITMModel, weights: dict[str, Tensor]) -> None:
    """Copy pretrained backbone weights into the online and the momentum image encoder."""
    for encoder in (model.image_encoder, model.image_encoder_momentum):
        try:
            encoder.backbone.load_state_dict(weights)
        except (AttributeError, RuntimeError) as err:
            raise CheckpointError(f"the pretrained backbone weights do not fit the image encoder ({err})") from err
