"""Frozen-encoder loading for evaluation: an ifnd pretraining checkpoint or a plain
torchvision ResNet state dict -> the backbone ``[B, 3, S, S] -> [B, feat_dim]``.

* ifnd checkpoint (``RUN/checkpoints/last.pt``): a dict with ``model`` (the
  contrastive model's state dict; backbone weights under ``backbone.``) and
  ``config`` (the pretraining config, whose data/model settings the evaluation reuses).
* plain state dict: the tensors of a torchvision ResNet (``conv1.weight``, ...,
  optionally ``module.``-prefixed or wrapped in ``{"state_dict": ...}``); the
  classifier ``fc.*`` is dropped and ``--set model.backbone=...`` names the architecture.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ifnd.models.backbones import BACKBONES, build_backbone
from ifnd.runtime.checkpoint import load_checkpoint


class EvalError(RuntimeError):
    """An evaluation input cannot be used; the message says how to fix it."""


@dataclass(frozen=True)
class EncoderWeights:
    """Backbone weights read from a file, with the pretraining config when there is one."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    saved_config: dict[str, Any] | None


def _strip_prefix(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}


def read_encoder_weights(path: str | Path) -> EncoderWeights:
    """Read the backbone weights of an ifnd checkpoint or a plain torchvision state dict.

    Raises:
        EvalError: the file does not exist or holds no backbone weights.
    """
    path = Path(path)
    if not path.is_file():
        raise EvalError(f"checkpoint {str(path)!r} not found; pass --checkpoint RUN/checkpoints/last.pt of a pretraining run")
    state = load_checkpoint(path)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):  # ifnd pretraining checkpoint
        weights, saved_config = _strip_prefix(state["model"], "backbone."), state.get("config")
    else:  # plain state dict, possibly wrapped and/or saved from DataParallel
        raw = state.get("state_dict", state) if isinstance(state, dict) else {}
        tensors = {k: v for k, v in raw.items() if isinstance(v, torch.Tensor)} if isinstance(raw, dict) else {}
        if tensors and all(k.startswith("module.") for k in tensors):
            tensors = _strip_prefix(tensors, "module.")
        weights = {k: v for k, v in tensors.items() if not k.startswith("fc.")}
        saved_config = None
    if not weights:
        raise EvalError(
            f"checkpoint {str(path)!r} holds no backbone weights (no 'backbone.*' keys in its 'model', and not a "
            "torchvision ResNet state dict); pass RUN/checkpoints/last.pt written by `python -m ifnd pretrain`"
        )
    return EncoderWeights(path, weights, saved_config)


def feature_dim_of(state_dict: dict[str, torch.Tensor]) -> int | None:
    """Width of the last normalisation layer (last 1-D ``*.weight``): the pooled feature size of every supported backbone."""
    last = [value for key, value in state_dict.items() if key.endswith("weight") and value.dim() == 1]
    return int(last[-1].numel()) if last else None


def _backbones_with_dim(dim: int) -> list[str]:
    return [name for name in BACKBONES if build_backbone(name)[1] == dim]


def _mismatch_hint(weights: dict[str, torch.Tensor], model: nn.Module, cifar_stem: bool) -> str:
    """The first few missing, unexpected and mis-shaped keys, and the stem setting that fits the weights."""
    expected = model.state_dict()
    problems = []
    missing = [k for k in expected if k not in weights]
    if missing:
        problems.append(f"missing {missing[:3]}")
    unexpected = [k for k in weights if k not in expected]
    if unexpected:
        problems.append(f"unexpected {unexpected[:3]}")
    shapes = [f"{k} {tuple(weights[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in weights and weights[k].shape != v.shape]
    if shapes:
        problems.append(f"shapes {shapes[:3]}")
    stem = weights.get("conv1.weight")
    if stem is not None and (stem.shape[-1] == 3) != cifar_stem:
        problems.append(f"the weights have a {stem.shape[-1]}x{stem.shape[-1]} stem: "
                        f"add --set model.cifar_stem={str(not cifar_stem).lower()}")
    has_stats = any(k.endswith("running_mean") for k in weights)
    if has_stats != any(k.endswith("running_mean") for k in expected):
        problems.append(f"the weights are from a {'BatchNorm' if has_stats else 'GroupNorm'} backbone: "
                        f"add --set model.norm={'batch' if has_stats else 'group'}")
    return "; ".join(problems)


def build_encoder(weights: EncoderWeights, backbone: str, cifar_stem: bool, norm: str = "batch") -> tuple[nn.Module, int]:
    """The ``backbone`` architecture (``model.*`` settings) with ``weights`` loaded.

    Returns ``(module [B,3,S,S] -> [B,feat_dim], feat_dim)``.

    Raises:
        EvalError: the weights' feature size or layer shapes do not fit the architecture.
    """
    model, feat_dim = build_backbone(backbone, cifar_stem, norm)
    saved_dim = feature_dim_of(weights.state_dict)
    if saved_dim is not None and saved_dim != feat_dim:
        fits = _backbones_with_dim(saved_dim)
        fix = f"add --set model.backbone={fits[0]}" if fits else f"use a backbone with {saved_dim}-d features"
        raise EvalError(
            f"checkpoint {str(weights.path)!r} produces {saved_dim}-d features but model.backbone={backbone} "
            f"produces {feat_dim}-d ones; {fix}"
        )
    try:
        model.load_state_dict(weights.state_dict)
    except RuntimeError as err:
        raise EvalError(
            f"the weights of {str(weights.path)!r} do not fit model.backbone={backbone} "
            f"model.cifar_stem={cifar_stem} model.norm={norm}: "
            f"{_mismatch_hint(weights.state_dict, model, cifar_stem)}"
        ) from err
    return model, feat_dim


def default_output_dir(checkpoint: str | Path, protocol: str) -> Path:
    """``RUN/eval/<protocol>`` for ``RUN/checkpoints/x.pt``; ``FOLDER/eval/<protocol>`` for any other file."""
    checkpoint = Path(checkpoint)
    run_dir = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    return run_dir / "eval" / protocol
