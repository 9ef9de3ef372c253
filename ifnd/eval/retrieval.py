"""Image-text retrieval metrics: R@K in both directions and RSUM.

Pure functions on a similarity matrix ``sims [N_img, N_cap]`` and an explicit
caption-to-image map ``caption_image [N_cap]`` (an image may have any number of
captions; COCO's Karpathy test has images with more than 5).

* image-to-text: the rank of an image is the rank of the *best* of its captions;
* text-to-image: the rank of a caption is the rank of its one image.

Ranks are 0-based and pessimistic about ties: a wrong candidate scoring exactly as
high as the right one counts as ranked before it, so a constant (collapsed) similarity
matrix scores no better than chance would.
"""

from __future__ import annotations

import torch
from torch import Tensor

KS = (1, 5, 10)
METRIC_KEYS = ("r1_i2t", "r5_i2t", "r10_i2t", "r1_t2i", "r5_t2i", "r10_t2i", "rsum")


def _check(sims: Tensor, caption_image: Tensor) -> None:
    if sims.dim() != 2 or caption_image.shape != (sims.shape[1],):
        raise ValueError(
            f"expected sims [N_img, N_cap] and caption_image [N_cap], got {tuple(sims.shape)} and {tuple(caption_image.shape)}"
        )
    if caption_image.numel() and (int(caption_image.min()) < 0 or int(caption_image.max()) >= sims.shape[0]):
        raise ValueError(f"caption_image holds ids outside [0, {sims.shape[0]})")


def i2t_ranks(sims: Tensor, caption_image: Tensor) -> Tensor:
    """Rank of the best caption of every image among all captions.

    Args:
        sims: ``[N_img, N_cap]`` float similarities.
        caption_image: ``[N_cap]`` long, the image of each caption.

    Returns:
        ``[N_img]`` long, 0-based: the number of *other* images' captions scoring at least
        as high as the image's best caption. An image without captions gets ``N_cap``.
    """
    _check(sims, caption_image)
    num_images = sims.shape[0]
    own_sims = sims.gather(0, caption_image.unsqueeze(0)).squeeze(0)  # [N_cap], sim to its own image
    best_own = sims.new_full((num_images,), float("-inf")).scatter_reduce(0, caption_image, own_sims, "amax")
    ties_own = torch.zeros(num_images, dtype=torch.long, device=sims.device).scatter_add_(
        0, caption_image, (own_sims >= best_own[caption_image]).long()
    )  # own captions at the best score (>= 1 for an image with captions)
    ranks = (sims >= best_own.unsqueeze(1)).sum(dim=1) - ties_own
    return torch.where(torch.isinf(best_own), sims.shape[1], ranks)


def t2i_ranks(sims: Tensor, caption_image: Tensor) -> Tensor:
    """Rank of every caption's image among all images.

    Args:
        sims: ``[N_img, N_cap]`` float similarities.
        caption_image: ``[N_cap]`` long, the image of each caption.

    Returns:
        ``[N_cap]`` long, 0-based: the number of other images scoring at least as high
        for that caption as its own image.
    """
    _check(sims, caption_image)
    own_sim = sims.gather(0, caption_image.unsqueeze(0))  # [1, N_cap]
    return (sims >= own_sim).sum(dim=0) - 1


def recall_at(ranks: Tensor, ks: tuple[int, ...] = KS) -> list[float]:
    """Percentage of queries whose 0-based rank is below each ``k`` (R@k)."""
    return [100.0 * (ranks < k).double().mean().item() for k in ks]


def retrieval_metrics(sims: Tensor, caption_image: Tensor) -> dict[str, float]:
    """R@1/5/10 both ways and RSUM (their sum) on the whole set.

    Args:
        sims: ``[N_img, N_cap]`` float similarities.
        caption_image: ``[N_cap]`` long, the image of each caption.

    Returns:
        ``{r1_i2t, r5_i2t, r10_i2t, r1_t2i, r5_t2i, r10_t2i, rsum}`` in percent.
    """
    values = recall_at(i2t_ranks(sims, caption_image)) + recall_at(t2i_ranks(sims, caption_image))
    metrics = dict(zip(METRIC_KEYS, values))
    metrics["rsum"] = sum(values)
    return metrics


def fold_metrics(sims: Tensor, caption_image: Tensor, folds: int) -> list[dict[str, float]]:
    """Metrics of each of ``folds`` contiguous image blocks (the COCO "5-fold 1K" protocol).

    Fold ``f`` keeps images ``[f * n, (f + 1) * n)`` (``n = N_img // folds``; the last
    fold takes the remainder) and exactly the captions of those images.

    Returns:
        One :func:`retrieval_metrics` dict per fold.
    """
    num_images = sims.shape[0]
    if not 1 <= folds <= num_images:
        raise ValueError(f"folds must be in [1, {num_images}], got {folds}")
    _check(sims, caption_image)
    size = num_images // folds
    results = []
    for fold in range(folds):
        start, stop = fold * size, num_images if fold == folds - 1 else (fold + 1) * size
        keep = (caption_image >= start) & (caption_image < stop)
        results.append(retrieval_metrics(sims[start:stop][:, keep], caption_image[keep] - start))
    return results


def mean_metrics(results: list[dict[str, float]]) -> dict[str, float]:
    """Key-wise mean of metric dicts (RSUM of the means equals the mean of the RSUMs)."""
    return {key: sum(r[key] for r in results) / len(results) for key in METRIC_KEYS}
