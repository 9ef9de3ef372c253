import pytest
import torch
import torch.nn.functional as F

from ifnd.falseneg.fnc import support_false_negatives, support_scores


def test_support_scores_take_the_best_view_by_hand():
    views = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])           # one anchor, two views
    candidates = torch.tensor([[0.6, 0.8], [-1.0, 0.0], [0.8, -0.6]])
    # each candidate's best view: max(0.6, 0.8), max(-1.0, 0.0), max(0.8, -0.6)
    assert support_scores(views, candidates)[0].tolist() == pytest.approx([0.8, 0.0, 0.8])


def test_support_scores_equal_the_max_over_per_view_similarities():
    generator = torch.Generator().manual_seed(0)
    views = F.normalize(torch.randn(3, 4, 5, generator=generator), dim=-1)
    candidates = F.normalize(torch.randn(7, 5, generator=generator), dim=-1)
    per_view = torch.stack([views[:, s] @ candidates.T for s in range(4)])  # [S, B, M]
    assert torch.allclose(support_scores(views, candidates), per_view.max(0).values)


def test_top_k_and_threshold_combine_as_their_code_and_alone():
    scores = torch.tensor([[0.95, 0.9, 0.8, 0.75, 0.6], [0.2, 0.99, 0.98, 0.1, 0.72]])
    own = torch.tensor([[True, False, False, False, False], [False, False, False, False, True]])
    # row 0: its own 0.95 never counts; top 2 of the rest are 0.9, 0.8, both > 0.7
    # row 1: top 2 are 0.99, 0.98; 0.72 (> 0.7) is its own image's view
    both = support_false_negatives(scores, own, top_k=2, threshold=0.7)
    assert both.tolist() == [[False, True, True, False, False], [False, True, True, False, False]]
    tight = support_false_negatives(scores, own, top_k=3, threshold=0.85)  # top 3 of row 0 minus 0.8, 0.75
    assert tight[0].tolist() == [False, True, False, False, False]
    assert support_false_negatives(scores, own, top_k=0, threshold=0.7).tolist() == [
        [False, True, True, True, False], [False, True, True, False, False]]  # threshold alone
    assert support_false_negatives(scores, own, top_k=1, threshold=None).tolist() == [
        [False, True, False, False, False], [False, True, False, False, False]]  # top-k alone
    with pytest.raises(ValueError, match="top_k"):
        support_false_negatives(scores, own, top_k=0, threshold=None)


def test_top_k_larger_than_the_candidates_and_all_own_rows():
    scores = torch.tensor([[0.9, 0.8], [0.9, 0.95]])
    own = torch.tensor([[False, False], [True, True]])
    assert support_false_negatives(scores, own, top_k=10, threshold=0.7).tolist() == [[True, True], [False, False]]
