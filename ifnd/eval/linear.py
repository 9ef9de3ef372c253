"""The linear probe (frozen backbone), its data and top-k evaluation; ``linear.protocol`` picks one of two.

``cached`` (the quick probe) trains ``nn.Linear(feat_dim, C)`` on L2-normalised backbone
features, either cached once from centre-cropped images (``linear.cache_features``) or
recomputed at every epoch from randomly cropped and flipped images, with a cosine learning
rate; it tests on the cached centre-crop features of the test split. Its numbers rank
encoders against each other; they are not comparable with published tables.

``moco`` is MoCo's ``main_lincls``: random-resized crops (area ``linear.min_scale`` to 1) and
flips at every epoch, seeded per sample and epoch; unnormalised features of the frozen
backbone (BatchNorm in eval mode); ``fc`` initialised N(0, 0.01); SGD with the learning rate
divided by 10 at each of ``linear.lr_steps``; tested on Resize(``linear.eval_resize``) +
CenterCrop(``data.image_size``). It runs under ``torchrun`` (each rank a shard of every
batch, gradients averaged; the test split sharded and gathered) and resumes on the engine.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
import torchvision.transforms as T
from lightly.transforms.utils import IMAGENET_NORMALIZE
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ifnd.data.build import eval_loader
from ifnd.data.views import IndexedImages, IndexedViews
from ifnd.eval.classifier import ClassifierSpec, fit_classifier
from ifnd.metrics.knn import extract_features, topk_accuracy
from ifnd.runtime import distributed as dist
from ifnd.runtime.run import RunDir


def train_transform(image_size: int, normalize: bool, min_scale: float, hflip_prob: float) -> Callable:
    """Random resized crop + horizontal flip: PIL image -> ``[3, S, S]`` tensor (fine-tuning / probe augmentation)."""
    steps: list[Callable] = [
        T.RandomResizedCrop(image_size, scale=(min_scale, 1.0)),
        T.RandomHorizontalFlip(hflip_prob),
        T.ToTensor(),
    ]
    if normalize:
        steps.append(T.Normalize(IMAGENET_NORMALIZE["mean"], IMAGENET_NORMALIZE["std"]))
    return T.Compose(steps)


def augmented_images(source: Dataset, cfg: Any) -> Dataset:
    """``source`` as ``(image [3,S,S], label, index)`` through :func:`train_transform`."""
    aug = cfg.augment
    return IndexedImages(source, train_transform(cfg.data.image_size, aug.normalize, aug.min_scale, aug.hflip_prob))


class FeatureBatches:
    """Mini-batches ``(feats [B, D], labels [B])`` of in-memory tensors in the given order (test-time)."""

    def __init__(self, feats: torch.Tensor, labels: torch.Tensor, batch_size: int):
        self.feats, self.labels, self.batch_size = feats, labels, batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self.labels), self.batch_size):
            yield self.feats[start:start + self.batch_size], self.labels[start:start + self.batch_size]


def encode(encoder: nn.Module, source: Dataset, cfg: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised centre-crop features ``[N, D]`` and labels ``[N]`` of a whole source."""
    loader = eval_loader(source, cfg.data.image_size, cfg.augment.normalize, 256, cfg.data.num_workers)
    return extract_features(encoder, loader, device)


def num_classes(*sources: Dataset) -> int:
    """Number of classes covering every source's ``classes`` and labels."""
    return max(max(len(s.classes), int(s.labels.max()) + 1) for s in sources)  # type: ignore[attr-defined]


class FrozenEncoder(nn.Module):
    """An encoder kept in eval mode without gradients; ``[B,3,S,S] -> [B,D]``, L2-normalised (as :func:`encode`)
    unless ``normalize`` is false."""

    def __init__(self, encoder: nn.Module, normalize: bool = True):
        super().__init__()
        self.encoder = encoder.eval().requires_grad_(False)
        self.normalize = normalize

    def train(self, mode: bool = True) -> "FrozenEncoder":
        self.training = mode
        return self  # BatchNorm statistics stay frozen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            feats = self.encoder(x).float()
            return F.normalize(feats, dim=1) if self.normalize else feats


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader | FeatureBatches, device: torch.device) -> dict[str, float]:
    """``{"top1", "top5"}`` (%) of ``model`` (inputs -> logits ``[B, C]``) over a loader of ``(inputs, labels, ...)``."""
    model.eval()
    logits, labels = [], []
    for batch in loader:
        logits.append(model(batch[0].to(device)).float().cpu())
        labels.append(batch[1])
    return topk_accuracy(torch.cat(logits), torch.cat(labels))


def linear_probe(
    encoder: nn.Module,
    feat_dim: int,
    train_src: Dataset,
    test_src: Dataset,
    cfg: Any,
    device: torch.device,
    run: RunDir | None = None,
    resume: str | None = None,
    features: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Linear classification on the frozen ``encoder`` (``[B,3,S,S] -> [B, feat_dim]``).

    ``features``: the :func:`encode` results ``(train feats, train labels, test feats, test
    labels)`` when the caller has them already (they are computed here otherwise).

    Returns the engine's metrics: ``{"top1", "top5"}`` (%) on the test split, ``history``, ...
    """
    lin = cfg.linear
    if lin.protocol == "moco":
        return moco_probe(encoder, feat_dim, train_src, test_src, cfg, device, run, resume)
    classes = num_classes(train_src, test_src)
    if features is None:
        train = encode(encoder, train_src, cfg, device) if lin.cache_features else (None, None)
        features = (*train, *encode(encoder, test_src, cfg, device))
    train_data = features[:2] if lin.cache_features else augmented_images(train_src, cfg)
    test_feats, test_labels = features[2:]

    def build(dev: torch.device) -> tuple[nn.Module, torch.optim.Optimizer]:
        classifier = nn.Linear(feat_dim, classes).to(dev)
        model = classifier if lin.cache_features else nn.Sequential(FrozenEncoder(encoder), classifier)
        optimizer = torch.optim.SGD(classifier.parameters(), lr=lin.lr, momentum=lin.momentum,
                                    weight_decay=lin.weight_decay)
        return model, optimizer

    def test(model: nn.Module) -> dict[str, float]:
        classifier = model if lin.cache_features else model[1]
        return evaluate(classifier, FeatureBatches(test_feats, test_labels, 1024), device)

    _, metrics = fit_classifier(cfg, ClassifierSpec("linear", build, train_data, test), run, resume)
    return metrics


def step_decay(milestones: list[int]) -> Callable[[int, int], float]:
    """``(step, steps_per_epoch) -> 0.1 ** (milestones reached by the step's epoch)`` (main_lincls's schedule)."""
    return lambda step, steps_per_epoch: 0.1 ** sum(step // steps_per_epoch >= m for m in milestones)


@torch.no_grad()
def evaluate_sharded(model: nn.Module, source: Dataset, cfg: Any, device: torch.device) -> dict[str, float]:
    """``{"top1", "top5"}`` (%) of ``model`` over ``source`` through Resize(``linear.eval_resize``) + CenterCrop:
    each rank classifies every world-th image, the logits are gathered (every rank gets the result)."""
    shard = list(range(dist.rank(), len(source), dist.world_size()))
    loader = eval_loader(source, cfg.data.image_size, cfg.augment.normalize, 256, cfg.data.num_workers,
                         indices=shard, resize=cfg.linear.eval_resize)
    model.eval()
    logits, labels = [], []
    for images, batch_labels, _ in loader:
        logits.append(model(images.to(device, non_blocking=True)).float())
        labels.append(batch_labels.to(device))
    ids = torch.tensor(shard, device=device)
    all_logits = dist.gather_rows(torch.cat(logits), ids, len(source))
    all_labels = dist.gather_rows(torch.cat(labels).float()[:, None], ids, len(source))[:, 0].long()
    return topk_accuracy(all_logits.cpu(), all_labels.cpu())


def moco_probe(encoder: nn.Module, feat_dim: int, train_src: Dataset, test_src: Dataset, cfg: Any,
               device: torch.device, run: RunDir | None = None, resume: str | None = None) -> dict[str, Any]:
    """``linear.protocol=moco`` (see the module docstring); returns the engine's metrics (``top1``, ``top5``, ...)."""
    lin = cfg.linear
    classes = num_classes(train_src, test_src)
    crops = train_transform(cfg.data.image_size, cfg.augment.normalize, lin.min_scale, 0.5)

    def build(dev: torch.device) -> tuple[nn.Module, torch.optim.Optimizer]:
        classifier = nn.Linear(feat_dim, classes)
        nn.init.normal_(classifier.weight, 0.0, 0.01)
        nn.init.zeros_(classifier.bias)
        model = nn.Sequential(FrozenEncoder(encoder, normalize=False), classifier).to(dev)
        optimizer = torch.optim.SGD(classifier.parameters(), lr=lin.lr, momentum=lin.momentum,
                                    weight_decay=lin.weight_decay)
        return model, optimizer

    spec = ClassifierSpec("linear", build, IndexedViews(train_src, crops, seed=cfg.seed),
                          lambda model: evaluate_sharded(model, test_src, cfg, device), step_decay(lin.lr_steps))
    _, metrics = fit_classifier(cfg, spec, run, resume)
    return metrics
