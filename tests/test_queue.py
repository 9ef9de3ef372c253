import pytest
import torch

from ifnd.models.queue import IdQueue


def test_queue_fills_wraps_and_keeps_ids():
    queue = IdQueue(4, 2)
    keys, ids = queue.contents()
    assert keys.shape == (0, 2) and ids.numel() == 0
    queue.enqueue(torch.ones(3, 2), torch.tensor([10, 11, 12]))
    assert queue.contents()[1].tolist() == [10, 11, 12]
    queue.enqueue(2 * torch.ones(3, 2), torch.tensor([20, 21, 22]))
    keys, ids = queue.contents()
    # slots 0,1 overwritten by 21,22; slot 2 keeps 12; slot 3 holds 20
    assert ids.tolist() == [21, 22, 12, 20]
    assert keys[:, 0].tolist() == [2.0, 2.0, 1.0, 2.0]
    assert int(queue.ptr) == 2


def test_queue_state_round_trip():
    queue = IdQueue(5, 3)
    queue.enqueue(torch.randn(4, 3), torch.arange(4))
    fresh = IdQueue(5, 3)
    fresh.load_state_dict(queue.state_dict())
    assert torch.equal(fresh.contents()[0], queue.contents()[0])
    assert torch.equal(fresh.ids, queue.ids) and int(fresh.ptr) == 4


def test_queue_rejects_batches_larger_than_itself():
    with pytest.raises(ValueError, match="queue_size"):
        IdQueue(2, 3).enqueue(torch.zeros(3, 3), torch.arange(3))
