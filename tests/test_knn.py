"""The kNN monitor's scoring: one process against the training rows sharded over 2 gloo processes."""

import pytest
import torch
import torch.nn.functional as F

from ifnd.metrics.knn import knn_accuracy, knn_scores
from ifnd.runtime import distributed as dist
from ifnd.runtime.spawn import run_ranks


def _data() -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    means = F.normalize(torch.randn(6, 8, generator=gen), dim=1)
    train_labels, test_labels = torch.randint(0, 6, (301,), generator=gen), torch.randint(0, 6, (57,), generator=gen)
    train = F.normalize(means[train_labels] + 0.6 * torch.randn(301, 8, generator=gen), dim=1)
    test = F.normalize(means[test_labels] + 0.6 * torch.randn(57, 8, generator=gen), dim=1)
    return train, train_labels, test, test_labels


def _sharded_monitor(ks: tuple[int, ...]) -> list[tuple[dict[str, float], torch.Tensor]]:
    """This rank's every world-th training row against every query: accuracy and scores at each k."""
    train, train_labels, test, test_labels = _data()
    rows = slice(dist.rank(), None, dist.world_size())
    return [(knn_accuracy(train[rows], train_labels[rows], test, test_labels, k, 0.1, sharded=True),
             knn_scores(train[rows], train_labels[rows], test, 6, k, 0.1, chunk=20, sharded=True)) for k in ks]


def test_knn_scores_by_hand():
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.8, 0.6]])
    scores = knn_scores(train, torch.tensor([0, 1, 1]), torch.tensor([[1.0, 0.0]]), 2, k=2, temperature=1.0)
    assert torch.allclose(scores, torch.tensor([[torch.e ** 1.0, torch.e ** 0.8]]))


@pytest.mark.slow
@pytest.mark.distributed
def test_two_gloo_processes_give_the_one_process_accuracy():
    train, train_labels, test, test_labels = _data()
    ks = (5, 200)  # 200: more than a shard's 150 rows
    rank0, rank1 = run_ranks(_sharded_monitor, 2, ks)
    for k, (acc0, scores0), (acc1, scores1) in zip(ks, rank0, rank1):
        assert acc0 == acc1 == knn_accuracy(train, train_labels, test, test_labels, k, 0.1)
        assert torch.allclose(scores0, knn_scores(train, train_labels, test, 6, k, 0.1), atol=1e-5)
        assert torch.equal(scores0, scores1)
