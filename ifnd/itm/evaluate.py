"""Embed a split with the online encoders and score retrieval (metrics in :mod:`ifnd.metrics.retrieval`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from ifnd.config import resolve
from ifnd.metrics.retrieval import fold_metrics, matching_metrics, mean_metrics, retrieval_metrics
from ifnd.itm.data import (
    CaptionDataset,
    ImageDataset,
    ItmSplit,
    collate_captions,
    image_transform,
    load_split,
)
from ifnd.itm.model import Architecture, ITMModel, build_itm_model
from ifnd.itm.schema import ITM_SCHEMA
from ifnd.itm.text import Vocabulary
from ifnd.runtime.checkpoint import CheckpointError, load_checkpoint
from ifnd.runtime.stopping import ignore_stop_signals


@torch.no_grad()
def embed_split(model: ITMModel, split: ItmSplit, vocab: Vocabulary, cfg: Any, device: torch.device,
                batch_size: int, num_workers: int = 0) -> tuple[Tensor, Tensor]:
    """Online embeddings ``(images [N_img, E], captions [N_cap, E])`` in split order, on the CPU."""
    was_training = model.training
    model.eval()
    images = DataLoader(ImageDataset(split, image_transform(cfg, train=False)), batch_size=batch_size,
                        num_workers=num_workers, worker_init_fn=ignore_stop_signals)
    captions = DataLoader(CaptionDataset(split, vocab), batch_size=batch_size, num_workers=num_workers,
                          collate_fn=collate_captions, worker_init_fn=ignore_stop_signals)
    image_emb = torch.cat([model.image_encoder(x.to(device)).float().cpu() for x, _ in images])
    text_emb = torch.cat([model.text_encoder(t.to(device), n).float().cpu() for t, n, _ in captions])
    model.train(was_training)
    return image_emb, text_emb


def score(image_emb: Tensor, text_emb: Tensor, caption_image: Tensor, folds: int = 1,
          matches: Tensor | None = None) -> dict[str, Any]:
    """Metrics of the whole set; with ``folds > 1`` the top-level keys are the fold means,
    and ``full`` and ``per_fold`` hold the whole-set and per-fold metrics. With ``matches``
    (``[N_cap, N_img]`` bool, every image each caption fits) the whole set is also scored with
    every matching item counted (``ext_*`` keys)."""
    sims = image_emb @ text_emb.T
    full = retrieval_metrics(sims, caption_image)
    if matches is not None:
        full.update(matching_metrics(sims, matches))
    if folds == 1:
        return {**full, "folds": 1}
    per_fold = fold_metrics(sims, caption_image, folds)
    return {**mean_metrics(per_fold), "folds": folds, "full": full, "per_fold": per_fold}


def evaluate_split(model: ITMModel, split: ItmSplit, vocab: Vocabulary, cfg: Any, device: torch.device,
                   folds: int = 1) -> dict[str, Any]:
    """:func:`score` of ``split`` embedded by ``model``."""
    image_emb, text_emb = embed_split(model, split, vocab, cfg, device, cfg.train.eval_batch_size, cfg.data.num_workers)
    matches = None if split.matches is None else torch.from_numpy(split.matches)
    return score(image_emb, text_emb, torch.from_numpy(split.caption_image), folds, matches)


def model_from_checkpoint(state: dict[str, Any], overrides: Sequence[str] = ()) -> tuple[ITMModel, Vocabulary, Any]:
    """``(model with the online weights, vocabulary, config)`` of an ``itm-train`` checkpoint.

    ``overrides`` (``key=value``) change the stored config, e.g. ``data.root`` after a move.
    """
    if not {"model", "config", "vocab", "architecture"} <= state.keys():
        raise CheckpointError("not an itm-train checkpoint (needs model, config, vocab and architecture entries)")
    cfg = resolve(state["config"], overrides, where="checkpoint config", schema=ITM_SCHEMA)
    model = build_itm_model(cfg, Architecture.from_dict(state["architecture"]))
    model.load_state_dict(state["model"])
    return model, Vocabulary.from_list(state["vocab"]), cfg


def run_dir_of(checkpoint: Path) -> Path:
    """The run directory of ``run/checkpoints/x.pt`` (else the checkpoint's folder)."""
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent


def evaluate_checkpoint(path: str | Path, split: str = "test", folds: int = 1, overrides: Sequence[str] = (),
                        device: torch.device | None = None) -> tuple[dict[str, Any], Path]:
    """Evaluate a checkpoint on ``split`` and write ``<run>/eval/<split>/metrics.json``.

    An ``output_dir=DIR`` among ``overrides`` writes ``DIR/metrics.json`` instead.

    Returns:
        ``(metrics, path of the metrics.json written)``.
    """
    path = Path(path)
    state = load_checkpoint(path)
    model, vocab, cfg = model_from_checkpoint(state, overrides)
    device = device or torch.device("cpu")
    metrics = evaluate_split(model.to(device), load_split(cfg, split), vocab, cfg, device, folds)
    metrics.update(checkpoint=str(path), split=split)
    moved = cfg.output_dir != state["config"].get("output_dir")
    out = (Path(cfg.output_dir) if moved else run_dir_of(path) / "eval" / split) / "metrics.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(metrics, indent=2))
    return metrics, out
