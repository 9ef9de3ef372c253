"""Semi-supervised fine-tuning (SimCLR's 1% / 10% protocol).

The labelled subset is either drawn class-balanced with a seed
(:func:`balanced_subset`) or read from a split file, one image identifier per line
(:func:`parse_split`, :func:`resolve_split`): the image path relative to ``data.root``
for image-file datasets (a bare file name, as in SimCLR's ImageNet ``1percent.txt``,
also matches), the dataset index for in-memory datasets. The whole network (backbone
and a new linear head) is then fine-tuned on it with the training augmentation
(:func:`finetune`).
"""

from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from ifnd.data.build import eval_loader
from ifnd.data.sources import ImageFileDataset
from ifnd.eval.checkpoints import EvalError
from ifnd.eval.classifier import ClassifierSpec, fit_classifier
from ifnd.eval.linear import augmented_images, evaluate, num_classes
from ifnd.runtime.run import RunDir


def balanced_subset(labels: np.ndarray, fraction: float, seed: int, classes: int) -> np.ndarray:
    """Sorted indices of ``floor(fraction * N / classes)`` random samples of every class.

    Args:
        labels: ``[N]`` int class of every training sample.
        fraction: labelled share of the training set, in (0, 1].
        seed: the same seed gives the same subset.
        classes: number of classes; every class must receive at least one sample.

    A class with fewer samples than its share contributes all of them.

    Raises:
        EvalError: ``fraction`` is out of range or leaves a class with no labelled image.
    """
    if not 0 < fraction <= 1:
        raise EvalError(f"--fraction must be in (0, 1], e.g. 0.01 or 0.1; got {fraction}")
    per_class = math.floor(fraction * len(labels) / classes + 1e-9)
    if per_class == 0:
        smallest = math.ceil(classes / len(labels) * 1e4) / 1e4
        raise EvalError(
            f"--fraction {fraction} of {len(labels)} training images leaves classes with no labelled image "
            f"({classes} classes, 0 images each); use --fraction {smallest} or more"
        )
    empty = np.flatnonzero(np.bincount(labels, minlength=classes) == 0)
    if len(empty):
        raise EvalError(
            f"classes {empty[:5].tolist()} have no training image, so no fraction gives them a labelled image; "
            "raise data.max_train_samples (or use 0 for all) or fix the training data"
        )
    rng = np.random.default_rng(seed)
    picks = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in range(classes)]
    return np.sort(np.concatenate(picks))


def sample_ids(source: Dataset, root: str = "") -> list[str]:
    """Identifier of every sample of a training source, in index order.

    Image-file datasets (also behind a ``Subset``): the path relative to ``root`` with
    ``/`` separators; in-memory datasets: the dataset index as a string.
    """
    base, positions = (source.dataset, source.indices) if isinstance(source, Subset) else (source, range(len(source)))
    if isinstance(base, ImageFileDataset):
        return [Path(os.path.relpath(base.samples[i][0], root or ".")).as_posix() for i in positions]
    return [str(i) for i in positions]


def parse_split(text: str) -> list[str]:
    """Identifiers of a split file's text: one per line; blank lines and ``#`` comments ignored, duplicates dropped."""
    lines = (line.strip() for line in text.splitlines())
    return list(dict.fromkeys(line for line in lines if line and not line.startswith("#")))


def format_split(ids: Sequence[str]) -> str:
    """The text of a split file naming ``ids`` (inverse of :func:`parse_split`)."""
    return "".join(f"{i}\n" for i in ids)


def resolve_split(names: Sequence[str], ids: Sequence[str], where: str = "split file") -> np.ndarray:
    """Sorted unique positions in ``ids`` of the split's ``names``.

    A name matches an identifier exactly, or its file name when that is unique (SimCLR's
    ImageNet lists hold bare file names).

    Raises:
        EvalError: the split is empty or names images not in ``ids`` (the first few are listed).
    """
    position = {name: i for i, name in enumerate(ids)}
    file_names = Counter(Path(name).name for name in ids)
    by_file_name = {Path(name).name: i for i, name in enumerate(ids) if file_names[Path(name).name] == 1}
    found = [position.get(name, by_file_name.get(name)) for name in names]
    missing = [name for name, i in zip(names, found) if i is None]
    if missing:
        raise EvalError(
            f"{where} names {len(missing)} image(s) that are not in the training set, e.g. {missing[:5]}; "
            "check data.name / data.root, or drop --split-file to draw a balanced subset"
        )
    if not names:
        raise EvalError(f"{where} names no image; write one image identifier per line, or drop --split-file")
    return np.unique(np.array(found, dtype=np.int64))


def labelled_subset(train_src: Dataset, cfg: Any) -> tuple[np.ndarray, list[str]]:
    """Indices of the labelled training samples and their identifiers (for the split file written to the output)."""
    ids = sample_ids(train_src, cfg.data.root)
    split_file = cfg.semisup.split_file
    if split_file:
        if not Path(split_file).is_file():
            raise EvalError(f"split file {split_file!r} not found; pass an existing file or drop --split-file")
        indices = resolve_split(parse_split(Path(split_file).read_text()), ids, f"split file {split_file!r}")
    else:
        labels = np.asarray(train_src.labels)  # type: ignore[attr-defined]
        indices = balanced_subset(labels, cfg.semisup.fraction, cfg.seed, len(train_src.classes))  # type: ignore[attr-defined]
    return indices, [ids[i] for i in indices]


def finetune(
    encoder: nn.Module,
    feat_dim: int,
    train_src: Dataset,
    test_src: Dataset,
    labelled: np.ndarray,
    cfg: Any,
    device: torch.device,
    run: RunDir | None = None,
    resume: str | None = None,
) -> dict[str, Any]:
    """Fine-tune ``encoder`` (``[B,3,S,S] -> [B, feat_dim]``) and a new linear head on ``train_src[labelled]``.

    SGD (Nesterov momentum 0.9) with separate backbone/head learning rates, cosine
    decay; random resized crop + flip. Returns the engine's metrics: ``{"top1", "top5"}`` (%)
    on the test split (centre crop), ``history``, ...
    """
    semi = cfg.semisup
    classes = num_classes(train_src, test_src)

    def build(dev: torch.device) -> tuple[nn.Module, torch.optim.Optimizer]:
        head = nn.Linear(feat_dim, classes)
        model = nn.Sequential(encoder, head).to(dev)
        optimizer = torch.optim.SGD(
            [{"params": encoder.parameters(), "lr": semi.lr_backbone}, {"params": head.parameters(), "lr": semi.lr_head}],
            momentum=0.9, nesterov=True, weight_decay=semi.weight_decay,
        )
        return model, optimizer

    def test(model: nn.Module) -> dict[str, float]:
        loader = eval_loader(test_src, cfg.data.image_size, cfg.augment.normalize, 256, cfg.data.num_workers)
        return evaluate(model, loader, device)

    train_data = augmented_images(Subset(train_src, labelled.tolist()), cfg)
    _, metrics = fit_classifier(cfg, ClassifierSpec("semisup", build, train_data, test), run, resume)
    return metrics
