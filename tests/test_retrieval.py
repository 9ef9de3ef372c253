"""Retrieval metrics on hand-made similarity matrices with known ranks."""

from __future__ import annotations

import pytest
import torch

from ifnd.metrics.retrieval import (
    METRIC_KEYS,
    fold_metrics,
    i2t_ranks,
    mean_metrics,
    recall_at,
    retrieval_metrics,
    t2i_ranks,
)

# 3 images; image 2 has 6 captions (more than 5, as in COCO's Karpathy test).
CAPTION_IMAGE = torch.tensor([0, 0, 1, 1, 2, 2, 2, 2, 2, 2])
#                    captions: 0    1    2    3    4    5    6    7    8    9
SIMS = torch.tensor([
    [0.9, 0.1, 0.0, 0.0, 0.0, 0.9, 0.0, 0.0, 0.0, 0.0],  # image 0: best 0.9 (caption 0); the tie at 5 comes later -> 0
    [0.6, 0.0, 0.3, 0.5, 0.7, 0.0, 0.0, 0.0, 0.0, 0.1],  # image 1: best 0.5 (caption 3); 0.6, 0.7 above -> 2
    [0.8, 0.8, 0.8, 0.5, 0.2, 0.2, 0.2, 0.2, 0.2, 0.1],  # image 2: best 0.2 (caption 4); 0.8 x3, 0.5 above -> 4
])
# Text-to-image, column by column (own image's score vs the other rows; an equal score counts when its row is lower):
#  0: 0.9 vs 0.6, 0.8 -> 0;   1: 0.1 vs 0.0, 0.8 -> 1;   2: 0.3 vs 0.0, 0.8 -> 1;
#  3: 0.5 vs 0.0, 0.5 (image 2, later) -> 0;   4: 0.2 vs 0.0, 0.7 -> 1;   5: 0.2 vs 0.9, 0.0 -> 1;
#  6-8: 0.2 vs 0.0, 0.0 -> 0;   9: 0.1 vs 0.0, 0.1 (image 1, earlier) -> 1.
T2I = [0, 1, 1, 0, 1, 1, 0, 0, 0, 1]


def test_i2t_rank_is_the_best_caption_with_ties_broken_by_index():
    assert i2t_ranks(SIMS, CAPTION_IMAGE).tolist() == [0, 2, 4]
    sims = SIMS.clone()
    sims[0, 0] = 0.1  # image 0's best is now 0.1 (its captions 0 and 1): only caption 5 (0.9) is above
    assert i2t_ranks(sims, CAPTION_IMAGE)[0] == 1


def test_t2i_ranks_match_hand_computed():
    assert t2i_ranks(SIMS, CAPTION_IMAGE).tolist() == T2I


def test_recall_and_rsum_from_known_ranks():
    metrics = retrieval_metrics(SIMS, CAPTION_IMAGE)
    assert metrics["r1_i2t"] == pytest.approx(100 / 3)
    assert metrics["r5_i2t"] == metrics["r10_i2t"] == pytest.approx(100.0)
    assert metrics["r1_t2i"] == pytest.approx(50.0)  # 5 of 10 captions at rank 0
    assert metrics["r5_t2i"] == metrics["r10_t2i"] == pytest.approx(100.0)
    assert metrics["rsum"] == pytest.approx(sum(metrics[k] for k in METRIC_KEYS[:-1]))
    assert list(metrics) == list(METRIC_KEYS)


def test_recall_at_counts_ranks_below_k():
    assert recall_at(torch.tensor([0, 1, 4, 5, 9, 10]), (1, 5, 10)) == pytest.approx([100 / 6, 50.0, 500 / 6])


def test_constant_similarities_score_chance():
    sims = torch.zeros(3, 10)
    assert i2t_ranks(sims, CAPTION_IMAGE).tolist() == [0, 2, 4]  # the captions listed before its first one
    assert t2i_ranks(sims, CAPTION_IMAGE).tolist() == [0, 0, 1, 1, 2, 2, 2, 2, 2, 2]  # the images before its own
    assert retrieval_metrics(sims, CAPTION_IMAGE)["r1_i2t"] == pytest.approx(100 / 3)  # 1 / N_img


def test_image_without_captions_gets_the_worst_rank():
    sims = torch.rand(3, 4)
    assert i2t_ranks(sims, torch.tensor([0, 0, 2, 2]))[1] == 4


def test_folds_score_each_image_block_with_its_own_captions():
    # 4 images, 2 captions each; fold 0 = images 0-1, fold 1 = images 2-3.
    caption_image = torch.arange(4).repeat_interleave(2)
    sims = torch.eye(4).repeat_interleave(2, dim=1) * 0.5
    sims[0, 2] = 0.9  # image 0 prefers a caption of image 1 (same fold): i2t rank 1 in both protocols
    sims[1, 4] = 0.9  # image 1 prefers a caption of image 2: hurts only the full-set protocol
    folds = fold_metrics(sims, caption_image, 2)
    full = retrieval_metrics(sims, caption_image)
    assert [f["r1_i2t"] for f in folds] == [50.0, 100.0]
    assert full["r1_i2t"] == 50.0  # images 0 and 1 both miss
    # text-to-image: caption 2 (image 1) loses to image 0 in fold 0; caption 4 (image 2) loses to image 1 only in full.
    assert [f["r1_t2i"] for f in folds] == [75.0, 100.0]
    assert full["r1_t2i"] == 75.0
    mean = mean_metrics(folds)
    assert mean["r1_i2t"] == 75.0 and mean["rsum"] == pytest.approx(sum(f["rsum"] for f in folds) / 2)


def test_bad_shapes_and_ids_are_refused():
    with pytest.raises(ValueError):
        i2t_ranks(SIMS, CAPTION_IMAGE[:-1])
    with pytest.raises(ValueError):
        t2i_ranks(SIMS, torch.tensor([0, 0, 1, 1, 2, 2, 2, 2, 2, 3]))
    with pytest.raises(ValueError):
        fold_metrics(SIMS, CAPTION_IMAGE, 4)


def test_matching_metrics_count_every_fitting_item():
    from ifnd.metrics.retrieval import matching_metrics

    # 2 images, 3 captions; caption 2 (of image 1) also fits image 0
    sims = torch.tensor([[0.1, 0.5, 0.9], [0.2, 0.8, 0.3]])
    caption_image = torch.tensor([0, 0, 1])
    matches = torch.tensor([[True, False], [True, False], [True, True]])
    plain = retrieval_metrics(sims, caption_image)
    extended = matching_metrics(sims, matches)
    # image 0's best caption is caption 2 (0.9): a hit only with the extended annotation
    assert plain["r1_i2t"] == 0.0 and extended["ext_r1_i2t"] == 50.0
    # captions: 0 -> image 1 scores higher (miss at 1), 1 -> image 1 higher (miss), 2 -> image 0 fits (hit)
    assert extended["ext_r1_t2i"] == pytest.approx(100 / 3)
    assert extended["ext_rsum"] == pytest.approx(sum(v for k, v in extended.items() if k != "ext_rsum"))


def test_extended_recall_at_two_densities_of_hand_made_matches():
    from ifnd.metrics.retrieval import matching_metrics

    # 3 images x 3 captions (caption i of image i)
    sims = torch.tensor([[0.9, 0.8, 0.1], [0.7, 0.2, 0.6], [0.3, 0.95, 0.5]])
    caption_image = torch.tensor([0, 1, 2])
    plain = retrieval_metrics(sims, caption_image)
    # sparse: each caption fits only its own image -> extended R@K is plain R@K
    sparse = matching_metrics(sims, torch.eye(3, dtype=torch.bool))
    assert {key: sparse[f"ext_{key}"] for key in METRIC_KEYS} == pytest.approx(plain)
    # dense: each caption fits 2 images (caption 0: images 0, 1; caption 1: 1, 2; caption 2: 2, 0)
    dense = matching_metrics(sims, torch.tensor([[True, True, False], [False, True, True], [True, False, True]]))
    # image -> best fitting caption: 0.9 (image 0), 0.7 (image 1), 0.95 (image 2): all first in their rows
    assert dense["ext_r1_i2t"] == 100.0
    # caption -> best fitting image: 0.9 (caption 0, first), 0.95 (caption 1, first), 0.5 (caption 2, behind 0.6)
    assert dense["ext_r1_t2i"] == pytest.approx(200 / 3) and dense["ext_r5_t2i"] == 100.0
    assert plain["r1_i2t"] == pytest.approx(100 / 3) and plain["r1_t2i"] == pytest.approx(100 / 3)
    assert dense["ext_rsum"] == pytest.approx(500 + 200 / 3) and plain["rsum"] == pytest.approx(400 + 200 / 3)
