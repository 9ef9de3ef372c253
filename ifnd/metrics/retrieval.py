"""Image-text retrieval metrics: R@K in both directions and RSUM.

Pure functions on a similarity matrix ``sims [N_img, N_cap]`` and an explicit
caption-to-image map ``caption_image [N_cap]`` (an image may have any number of
captions; COCO's Karpathy test has images with more than 5).

* image-to-text: the rank of an image is the rank of the *best* of its captions;
* text-to-image: the rank of a caption is the rank of its one image.

Ranks are 0-based; ties are broken by index, as a stable sort would: a wrong candidate
scoring exactly as high as the right one is ranked before it when its index is lower.
Identical captions of different images (frequent in the demo set) therefore share the
ranks among them, and a constant (collapsed) similarity matrix scores at chance.
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
        ``[N_img]`` long, 0-based: the captions of other images scoring higher than the
        image's best caption, plus those scoring the same with a lower index. An image
        without captions gets ``N_cap``.
    """
    _check(sims, caption_image)
    num_images, num_captions = sims.shape
    columns = torch.arange(num_captions, device=sims.device)
    own_sims = sims.gather(0, caption_image.unsqueeze(0)).squeeze(0)  # [N_cap], sim to its own image
    best = sims.new_full((num_images,), float("-inf")).scatter_reduce(0, caption_image, own_sims, "amax")
    at_best = torch.where(own_sims == best[caption_image], columns, num_captions)
    first_best = torch.full((num_images,), num_captions, device=sims.device).scatter_reduce(0, caption_image, at_best, "amin")
    best = best.unsqueeze(1)
    ranks = (sims > best).sum(dim=1) + ((sims == best) & (columns < first_best.unsqueeze(1))).sum(dim=1)
    return torch.where(first_best == num_captions, num_captions, ranks)


def t2i_ranks(sims: Tensor, caption_image: Tensor) -> Tensor:
    """Rank of every caption's image among all images.

    Args:
        sims: ``[N_img, N_cap]`` float similarities.
        caption_image: ``[N_cap]`` long, the image of each caption.

    Returns:
        ``[N_cap]`` long, 0-based: the other images scoring higher for that caption than
        its own image, plus those scoring the same with a lower index.
    """
    _check(sims, caption_image)
    own = sims.gather(0, caption_image.unsqueeze(0))  # [1, N_cap]
    rows = torch.arange(sims.shape[0], device=sims.device).unsqueeze(1)
    return (sims > own).sum(dim=0) + ((sims == own) & (rows < caption_image.unsqueeze(0))).sum(dim=0)


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


def matching_metrics(sims: Tensor, matches: Tensor) -> dict[str, float]:
    """R@K and RSUM counting every matching item as a hit (extended annotations, as ECCV Caption scores COCO).

    Args:
        sims: ``[N_img, N_cap]`` float similarities.
        matches: ``[N_cap, N_img]`` bool, the images each caption fits (its own among them).

    Returns:
        ``{ext_r1_i2t, ..., ext_rsum}``: image-to-text ranks the best matching caption of each
        image among all captions, text-to-image the best matching image of each caption; the rank
        is the number of items scoring strictly higher.
    """
    if matches.shape != (sims.shape[1], sims.shape[0]):
        raise ValueError(f"expected matches [N_cap, N_img] = {(sims.shape[1], sims.shape[0])}, got {tuple(matches.shape)}")
    fits = matches.T.to(sims.device)  # [N_img, N_cap]
    best_i2t = sims.masked_fill(~fits, float("-inf")).amax(dim=1, keepdim=True)
    best_t2i = sims.masked_fill(~fits, float("-inf")).amax(dim=0, keepdim=True)
    values = recall_at((sims > best_i2t).sum(dim=1)) + recall_at((sims > best_t2i).sum(dim=0))
    metrics = {f"ext_{key}": value for key, value in zip(METRIC_KEYS, values)}
    metrics["ext_rsum"] = sum(values)
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
