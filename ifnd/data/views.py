"""Augmented views with dataset indices, reproducible per sample.

:class:`IndexedViews` wraps an image source and returns ``(views, label, index)``:
``views`` is a list of two augmented tensors ``[3, S, S]`` from lightly's
``SimCLRTransform`` / ``MoCoV2Transform``; ``index`` is the sample's position in the
training set (the key of every false-negative table); ``label`` is for evaluation and
diagnostics only.

The random numbers of each sample's augmentation are seeded from
the stream ``("views", epoch, index)`` of the run's seed. The views therefore do not depend on the number of loader
workers, nor on where a run was stopped and resumed: an epoch resumed mid-way sees
exactly the images it would have seen.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torchvision.transforms as T
from lightly.transforms.utils import IMAGENET_NORMALIZE
from torch.utils.data import Dataset

from ifnd.runtime.seeding import derive_seed, seeded_call


def build_view_transform(cfg: Any, transform: type) -> Callable:
    """lightly's two-view ``transform`` class (a method's: ``SimCLRTransform``, ``MoCoV2Transform``) with
    ``cfg.augment`` strengths."""
    aug = cfg.augment
    return transform(
        input_size=cfg.data.image_size,
        cj_prob=aug.cj_prob,
        cj_strength=aug.cj_strength,
        min_scale=aug.min_scale,
        random_gray_scale=aug.gray_prob,
        gaussian_blur=aug.blur_prob,
        hf_prob=aug.hflip_prob,
        normalize=IMAGENET_NORMALIZE if aug.normalize else None,
    )


def build_eval_transform(image_size: int, normalize: bool = True, resize: int = 0) -> Callable:
    """Resize the shorter side to ``resize`` (0: ``image_size``) and centre-crop ``image_size`` (no randomness):
    the view used by kNN, probes and the `pass` features."""
    steps: list[Callable] = [T.Resize(resize or image_size), T.CenterCrop(image_size), T.ToTensor()]
    if normalize:
        steps.append(T.Normalize(IMAGENET_NORMALIZE["mean"], IMAGENET_NORMALIZE["std"]))
    return T.Compose(steps)


class IndexedViews(Dataset):
    """``source[i] -> (views, label, i)`` with per-sample seeded augmentation.

    With ``support_views`` S > 0, ``views`` holds S more (a detector's support views, FNC's): further calls of
    ``transform``, seeded from the stream ``("support", epoch, index, call)``, so that the two training views
    stay those of S = 0.
    """

    def __init__(self, source: Dataset, transform: Callable, seed: int = 0, support_views: int = 0):
        self.source = source
        self.transform = transform
        self.seed = seed
        self.support_views = support_views
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Call before building the epoch's DataLoader iterator (workers copy the value)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[list[torch.Tensor], int, int]:
        image, label = self.source[index]
        views = seeded_call(derive_seed(self.seed, "views", self.epoch, index), self.transform, image)
        if self.support_views:
            views = [*views, *self._support(image, index)]
        return views, label, index

    def _support(self, image: Any, index: int) -> list[torch.Tensor]:
        """The ``support_views`` support views of sample ``index`` (the transform gives a list of views per call)."""
        support: list[torch.Tensor] = []
        while len(support) < self.support_views:
            support.extend(seeded_call(derive_seed(self.seed, "support", self.epoch, index, len(support)),
                                       self.transform, image))
        return support[:self.support_views]


class IndexedImages(Dataset):
    """``source[i] -> (tensor, label, i)`` through a deterministic transform."""

    def __init__(self, source: Dataset, transform: Callable):
        self.source = source
        self.transform = transform

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        image, label = self.source[index]
        return self.transform(image), label, index
