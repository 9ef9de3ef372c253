"""Weighted k-nearest-neighbour classification on frozen features (InstDisc / MoCo monitor).

Scoring runs on the device of the features, a chunk of queries at a time. With ``sharded``
every rank holds only its own training rows and all the queries: each rank finds every query's
top-k among its rows, the ``[queries, k]`` similarities and labels are all-gathered, and the
top-k of those is the global top-k (no rank ever holds another's training features).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ifnd.runtime import distributed as dist


@torch.no_grad()
def extract_features(encoder: nn.Module, loader: DataLoader, device: torch.device,
                     on_device: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``encoder`` over a loader of ``(images, labels, indices)``.

    Returns L2-normalised features ``[N, D]`` (float32; on the CPU, or on ``device`` with
    ``on_device``) in dataset-index order and labels ``[N]`` (on the same device).
    """
    was_training = encoder.training
    encoder.eval()
    feats, labels, indices = [], [], []
    for images, batch_labels, batch_indices in loader:
        batch = F.normalize(encoder(images.to(device, non_blocking=True)).float(), dim=1)
        feats.append(batch if on_device else batch.cpu())
        labels.append(batch_labels)
        indices.append(batch_indices)
    encoder.train(was_training)
    order = torch.cat(indices).argsort()
    out = torch.cat(feats)
    return out[order.to(out.device)], torch.cat(labels)[order].to(out.device)


def knn_scores(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk: int = 1024,
    sharded: bool = False,
) -> torch.Tensor:
    """Class scores ``[N_test, C]``: sum over the k most similar training samples of exp(sim / T).

    Args:
        train_feats: ``[N_train, D]`` normalised (this rank's rows when ``sharded``);
        train_labels: ``[N_train]`` long; test_feats: ``[N_test, D]`` normalised, the same on every rank.
        sharded: merge every rank's per-query top-k (a collective: every rank calls this).

    Returns:
        ``[N_test, C]`` on the device of ``test_feats`` (identical on every rank).
    """
    device = test_feats.device
    train_feats, train_labels = train_feats.to(device), train_labels.to(device)
    total = int(dist.sum_tensor(torch.tensor([len(train_feats)], device=device))[0]) if sharded else len(train_feats)
    k, local_k = min(k, total), min(k, len(train_feats))
    scores = []
    for start in range(0, test_feats.shape[0], chunk):
        sims = test_feats[start:start + chunk] @ train_feats.T  # [b, N_train]
        top_sims = sims.new_full((len(sims), k), float("-inf"))  # weight 0 where a rank has fewer than k rows
        top_labels = train_labels.new_zeros(len(sims), k)
        top_sims[:, :local_k], top_idx = sims.topk(local_k, dim=1)
        top_labels[:, :local_k] = train_labels[top_idx]
        if sharded:  # [world * b, k] in rank blocks -> [b, world * k] -> the k best
            top_sims, top_labels = (dist.gather(t).view(-1, len(sims), k).transpose(0, 1).reshape(len(sims), -1)
                                    for t in (top_sims, top_labels))
            top_sims, best = top_sims.topk(k, dim=1)
            top_labels = top_labels.gather(1, best)
        weights = (top_sims / temperature).exp()
        votes = torch.zeros(sims.shape[0], num_classes, dtype=weights.dtype, device=device)
        votes.scatter_add_(1, top_labels, weights)
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


def knn_accuracy(train_feats, train_labels, test_feats, test_labels, k: int = 200, temperature: float = 0.1,
                 sharded: bool = False) -> dict[str, float]:
    """Top-1 / top-5 (%) of the weighted kNN classifier (``sharded``: see :func:`knn_scores`)."""
    local_max = torch.stack([train_labels.max().to(test_labels.device), test_labels.max()]).max().reshape(1)
    num_classes = int((dist.gather(local_max) if sharded else local_max).max()) + 1
    scores = knn_scores(train_feats, train_labels, test_feats, num_classes, k, temperature, sharded=sharded)
    return topk_accuracy(scores, test_labels.to(scores.device))


class Flatten(nn.Module):
    """Raw pixels as features: ``[B, 3, S, S]`` -> ``[B, 3*S*S]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)
