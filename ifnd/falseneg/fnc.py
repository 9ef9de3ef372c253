"""FNC's detection of false negatives from support views (Huynh et al., WACV 2022; code: google-research/fnc).

Each anchor image comes with several augmented views (FNC's code: the two training views plus
``support_size`` = 8 support views, all embedded by the encoder, or by the momentum encoder
against a memory bank). A candidate's score for an anchor is its largest cosine similarity to
any of the anchor's views (their ``reduce_max`` over the views); the candidates of the anchor's
own image never count. A candidate is a detected false negative when it is among the anchor's
``top_k`` best scores *and* its score exceeds ``threshold`` (their code multiplies the two masks;
defaults ``fn_topk`` 10, ``fn_threshold`` 0.7). ``top_k = 0`` or ``threshold = None`` leaves that
criterion out, which gives the paper's pure top-k or pure threshold strategies.

The detections then leave the denominator (elimination) or become positives (attraction: their
code's loss, SupCon's L_out with the other views and the detections as positives), which
:func:`ifnd.losses.loss_masks` does for any detector.
"""

from __future__ import annotations

import torch


def support_scores(views: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """``[B, M]`` each candidate's largest cosine similarity to any view of the anchor.

    Args:
        views: ``[B, S, D]`` unit-norm embeddings of each anchor's views (support set).
        candidates: ``[M, D]`` unit-norm embeddings of the candidates.
    """
    return torch.einsum("bsd,md->bsm", views, candidates).amax(1)


def support_false_negatives(scores: torch.Tensor, own: torch.Tensor, top_k: int = 10,
                            threshold: float | None = 0.7) -> torch.Tensor:
    """``[B, M]`` bool: the candidates in each anchor's ``top_k`` scores whose score exceeds ``threshold``.

    Args:
        scores: ``[B, M]`` from :func:`support_scores`.
        own: ``[B, M]`` bool, candidates never flagged (the anchor's own image, empty slots).
        top_k: how many of each anchor's best-scored candidates may be flagged (0: no limit).
        threshold: the score a flagged candidate exceeds (None: no threshold).
    """
    if top_k < 0 or (top_k == 0 and threshold is None):
        raise ValueError(f"FNC needs top_k > 0 or a threshold (top_k = 0: no limit), got top_k={top_k}, threshold={threshold}")
    ranked = scores.masked_fill(own, float("-inf"))
    flagged = ~own
    if top_k:
        top = torch.zeros_like(own)
        top.scatter_(1, ranked.topk(min(top_k, scores.shape[1]), dim=1).indices, True)
        flagged &= top
    if threshold is not None:
        flagged &= scores > threshold
    return flagged
