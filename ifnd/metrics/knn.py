"""Weighted k-nearest-neighbour classification on frozen features (InstDisc / MoCo monitor)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader


@torch.no_grad()
def extract_features(encoder: nn.Module, loader: DataLoader, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``encoder`` over a loader of ``(images, labels, indices)``.

    Returns L2-normalised features ``[N, D]`` (float32, CPU) in dataset-index order and
    labels ``[N]``.
    """
    was_training = encoder.training
    encoder.eval()
    feats, labels, indices = [], [], []
    for images, batch_labels, batch_indices in loader:
        feats.append(F.normalize(encoder(images.to(device, non_blocking=True)).float(), dim=1).cpu())
        labels.append(batch_labels)
        indices.append(batch_indices)
    encoder.train(was_training)
    order = torch.cat(indices).argsort()
    return torch.cat(feats)[order], torch.cat(labels)[order]


def knn_scores(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk: int = 1024,
) -> torch.Tensor:
    """Class scores ``[N_test, C]``: sum over the k most similar training samples of exp(sim / T).

    Args:
        train_feats: ``[N_train, D]`` normalised; train_labels: ``[N_train]`` long;
        test_feats: ``[N_test, D]`` normalised.
    """
    k = min(k, train_feats.shape[0])
    scores = []
    for start in range(0, test_feats.shape[0], chunk):
        sims = test_feats[start:start + chunk] @ train_feats.T  # [b, N_train]
        top_sims, top_idx = sims.topk(k, dim=1)
        weights = (top_sims / temperature).exp()
        votes = torch.zeros(sims.shape[0], num_classes, dtype=weights.dtype)
        votes.scatter_add_(1, train_labels[top_idx], weights)
        scores.append(votes)
    return torch.cat(scores)


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """``{"top1": %, "top5": %}`` from scores ``[N, C]`` and labels ``[N]``."""
    result = {}
    for k in ks:
        k_eff = min(k, scores.shape[1])
        hit = (scores.topk(k_eff, dim=1).indices == labels[:, None]).any(1)
        result[f"top{k}"] = 100.0 * hit.float().mean().item()
    return result


def knn_unscored_reason(train_labels: torch.Tensor, has_test_split: bool) -> str | None:
    """Why a kNN monitor cannot score this data (one line), or None when it can.

    ``train_labels``: ``[N]`` long. Without a test split there is nothing to score; with a single class in
    the training data every prediction is that class, so any accuracy would be meaningless.
    """
    if not has_test_split:
        return "no test split to score (data.test_root is empty)"
    if train_labels.unique().numel() < 2:
        return (f"the training data hold one class (label {int(train_labels[0])}), so every kNN prediction is that class; "
                f"scoring needs at least two classes")
    return None


def knn_accuracy(train_feats, train_labels, test_feats, test_labels, k: int = 200, temperature: float = 0.1) -> dict[str, float]:
    """Top-1 / top-5 (%) of the weighted kNN classifier."""
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    return topk_accuracy(knn_scores(train_feats, train_labels, test_feats, num_classes, k, temperature), test_labels)


class Flatten(nn.Module):
    """Raw pixels as features: ``[B, 3, S, S]`` -> ``[B, 3*S*S]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)
