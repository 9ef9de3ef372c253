"""Classifiers on a pretrained encoder: the SGD + cosine training loop, top-k evaluation,
and the linear probe (frozen backbone, MoCo protocol).

The linear probe trains ``nn.Linear(feat_dim, C)`` on L2-normalised backbone features,
either cached once from centre-cropped images (``linear.cache_features``, the fast
path) or recomputed at every epoch from randomly cropped and flipped images. Both paths
test on the cached centre-crop features of the test split.
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
from torch.utils.tensorboard import SummaryWriter
from tqdm import trange

from ifnd.data.build import eval_loader
from ifnd.data.views import IndexedImages
from ifnd.eval.checkpoints import EvalError
from ifnd.eval.knn import extract_features, topk_accuracy
from ifnd.train.optim import build_scheduler


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


def augmented_loader(source: Dataset, cfg: Any, batch_size: int) -> DataLoader:
    """Shuffled (seeded) loader of ``(images [B,3,S,S], labels [B], indices [B])`` with :func:`train_transform`."""
    transform = train_transform(cfg.data.image_size, cfg.augment.normalize, cfg.augment.min_scale, cfg.augment.hflip_prob)
    return DataLoader(IndexedImages(source, transform), batch_size=batch_size, shuffle=True,
                      num_workers=cfg.data.num_workers, generator=torch.Generator().manual_seed(cfg.seed))


class FeatureBatches:
    """Mini-batches ``(feats [B, D], labels [B])`` of in-memory tensors (no per-sample DataLoader overhead).

    With a ``seed`` the order is reshuffled at every pass (reproducibly); without, it is the given order.
    """

    def __init__(self, feats: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int | None = None):
        self.feats, self.labels, self.batch_size = feats, labels, batch_size
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        order = torch.randperm(n, generator=self.generator) if self.generator is not None else torch.arange(n)
        for start in range(0, n, self.batch_size):
            batch = order[start:start + self.batch_size]
            yield self.feats[batch], self.labels[batch]


def encode(encoder: nn.Module, source: Dataset, cfg: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised centre-crop features ``[N, D]`` and labels ``[N]`` of a whole source."""
    loader = eval_loader(source, cfg.data.image_size, cfg.augment.normalize, 256, cfg.data.num_workers)
    return extract_features(encoder, loader, device)


def num_classes(*sources: Dataset) -> int:
    """Number of classes covering every source's ``classes`` and labels."""
    return max(max(len(s.classes), int(s.labels.max()) + 1) for s in sources)  # type: ignore[attr-defined]


class FrozenEncoder(nn.Module):
    """An encoder kept in eval mode without gradients; ``[B,3,S,S] -> [B,D]`` L2-normalised (as :func:`encode`)."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> "FrozenEncoder":
        self.training = mode
        return self  # BatchNorm statistics stay frozen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return F.normalize(self.encoder(x).float(), dim=1)


def train_classifier(
    model: nn.Module,
    loader: DataLoader | FeatureBatches,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    device: torch.device,
    writer: SummaryWriter | None = None,
    desc: str = "train",
) -> list[dict[str, float]]:
    """Cross-entropy training with a per-step cosine decay of every group's LR to 0.

    ``loader`` yields batches whose first two items are inputs ``[B, ...]`` and labels
    ``[B]``; ``model`` maps inputs to logits ``[B, C]``. Shows a tqdm bar over epochs and
    logs ``{desc}/loss``, ``{desc}/train_top1`` and ``{desc}/lr`` per epoch.

    Returns:
        Per-epoch records ``{"epoch", "loss", "train_top1", "lr"}``.

    Raises:
        EvalError: the loss became NaN or infinite.
    """
    scheduler = build_scheduler(optimizer, epochs * len(loader), 0)
    history = []
    bar = trange(epochs, desc=desc)
    for epoch in bar:
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        for batch in loader:
            inputs, labels = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
            logits = model(inputs)
            loss = F.cross_entropy(logits, labels)
            if not torch.isfinite(loss):
                raise EvalError(f"the {desc} loss became {loss.item()} at epoch {epoch}; lower its learning rate "
                                f"(--set linear.lr=... / semisup.lr_backbone=... semisup.lr_head=...)")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.item() * len(labels)
            correct += int((logits.argmax(1) == labels).sum())
            seen += len(labels)
        record = {"epoch": epoch, "loss": loss_sum / seen, "train_top1": 100.0 * correct / seen,
                  "lr": scheduler.get_last_lr()[0]}
        history.append(record)
        bar.set_postfix(loss=f"{record['loss']:.3f}")
        if writer is not None:
            for key in ("loss", "train_top1", "lr"):
                writer.add_scalar(f"{desc}/{key}", record[key], epoch)
    return history


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader | FeatureBatches, device: torch.device) -> dict[str, float]:
    """``{"top1", "top5"}`` (%) of ``model`` (inputs -> logits ``[B, C]``) over a loader of ``(inputs, labels, ...)``."""
    model.eval()
    logits, labels = [], []
    for batch in loader:
        logits.append(model(batch[0].to(device)).float().cpu())
        labels.append(batch[1])
    return topk_accuracy(torch.cat(logits), torch.cat(labels))


def fit_linear(
    loader: DataLoader | FeatureBatches,
    in_dim: int,
    classes: int,
    linear: Any,
    seed: int,
    device: torch.device,
    writer: SummaryWriter | None = None,
    encoder: nn.Module | None = None,
) -> tuple[nn.Linear, list[dict[str, float]]]:
    """Train ``nn.Linear(in_dim, classes)`` with SGD and a cosine LR.

    ``loader`` yields features ``[B, in_dim]`` and labels ``[B]``; or, when a frozen
    ``encoder`` is given, images ``[B, 3, S, S]`` that it turns into normalised
    features first. ``linear`` holds ``epochs, lr, momentum, weight_decay`` (the
    ``linear`` config section). Returns the classifier and its per-epoch history.
    """
    torch.manual_seed(seed)
    classifier = nn.Linear(in_dim, classes).to(device)
    model = classifier if encoder is None else nn.Sequential(FrozenEncoder(encoder), classifier)
    optimizer = torch.optim.SGD(classifier.parameters(), lr=linear.lr, momentum=linear.momentum,
                                weight_decay=linear.weight_decay)
    return classifier, train_classifier(model, loader, optimizer, linear.epochs, device, writer, "linear")


def linear_probe(
    encoder: nn.Module,
    feat_dim: int,
    train_src: Dataset,
    test_src: Dataset,
    cfg: Any,
    device: torch.device,
    writer: SummaryWriter | None = None,
) -> dict[str, Any]:
    """Linear classification on the frozen ``encoder`` (``[B,3,S,S] -> [B, feat_dim]``).

    Returns ``{"top1", "top5"}`` (%) on the test split and the training ``"history"``.
    """
    lin = cfg.linear
    if lin.cache_features:
        loader, frozen = FeatureBatches(*encode(encoder, train_src, cfg, device), lin.batch_size, cfg.seed), None
    else:
        loader, frozen = augmented_loader(train_src, cfg, lin.batch_size), encoder
    classes = num_classes(train_src, test_src)
    classifier, history = fit_linear(loader, feat_dim, classes, lin, cfg.seed, device, writer, frozen)
    test_feats, test_labels = encode(encoder, test_src, cfg, device)
    return {**evaluate(classifier, FeatureBatches(test_feats, test_labels, 1024), device), "history": history}
