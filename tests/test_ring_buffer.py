"""IdRingBuffer as FNE memory (image + text) and as MoCo queue: FIFO order, partial fill, checkpoint round trip, positive mask."""

from __future__ import annotations

import pytest
import torch

from ifnd.models.ring_buffer import EMPTY_ID, IdRingBuffer


def _batch(ids: list[int], dim: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Features that encode their id: image row = [id, id], text row = -[id, id]."""
    image = torch.tensor(ids, dtype=torch.float32).unsqueeze(1).repeat(1, dim)
    return image, -image, torch.tensor(ids)


def test_partial_fill_returns_only_filled_entries():
    memory = IdRingBuffer.pairs(4, 2)
    image, text, ids = memory.contents()
    assert image.shape == (0, 2) and text.shape == (0, 2) and ids.shape == (0,)

    memory.enqueue(*_batch([10, 11, 12]))
    image, text, ids = memory.contents()
    assert ids.tolist() == [10, 11, 12]
    assert image[:, 0].tolist() == [10.0, 11.0, 12.0]
    assert text[:, 1].tolist() == [-10.0, -11.0, -12.0]
    assert int(memory.ptr) == 3
    assert memory.ids[3].item() == EMPTY_ID


def test_wrap_around_overwrites_oldest_first():
    memory = IdRingBuffer.pairs(4, 2)
    memory.enqueue(*_batch([10, 11, 12]))
    memory.enqueue(*_batch([13, 14, 15]))  # slots 3, 0, 1
    assert memory.ids.tolist() == [14, 15, 12, 13]
    assert memory.image_feats[:, 0].tolist() == [14.0, 15.0, 12.0, 13.0]
    assert int(memory.ptr) == 2
    memory.enqueue(*_batch([16, 17, 18, 19]))  # a batch as large as the memory
    assert memory.ids.tolist() == [18, 19, 16, 17]
    assert int(memory.ptr) == 2


def test_enqueue_rejects_bad_input():
    memory = IdRingBuffer.pairs(4, 2)
    with pytest.raises(ValueError, match="does not fit"):
        memory.enqueue(*_batch([1, 2, 3, 4, 5]))
    with pytest.raises(ValueError, match="non-negative"):
        memory.enqueue(*_batch([1, -1]))
    image, text, ids = _batch([1, 2], dim=3)
    with pytest.raises(ValueError, match="expected"):
        memory.enqueue(image, text, ids)


def test_enqueue_stores_detached_copies():
    memory = IdRingBuffer.pairs(4, 2)
    image, text, ids = _batch([1, 2])
    image.requires_grad_(True)
    memory.enqueue(image, text, ids)
    assert not memory.image_feats.requires_grad
    image.data.fill_(0.0)  # later changes to the source do not reach the memory
    assert memory.image_feats[:2, 0].tolist() == [1.0, 2.0]


def test_state_dict_round_trip_into_fresh_module():
    memory = IdRingBuffer.pairs(4, 2)
    memory.enqueue(*_batch([10, 11, 12]))
    memory.enqueue(*_batch([13, 14]))
    restored = IdRingBuffer.pairs(4, 2)
    restored.load_state_dict(memory.state_dict())
    for a, b in zip(memory.contents(), restored.contents()):
        assert torch.equal(a, b)
    assert int(restored.ptr) == int(memory.ptr) == 1
    # Both continue identically from the restored pointer.
    memory.enqueue(*_batch([20]))
    restored.enqueue(*_batch([20]))
    assert torch.equal(memory.ids, restored.ids)


def test_positive_mask_marks_same_id():
    memory = IdRingBuffer.pairs(5, 2)
    memory.enqueue(*_batch([10, 11, 10]))  # two entries of image 10
    mask = memory.positive_mask(torch.tensor([10, 12, 11]))
    assert mask.dtype == torch.bool
    assert mask.tolist() == [
        [True, False, True],
        [False, False, False],
        [False, True, False],
    ]
def test_moco_queue_fills_wraps_and_keeps_ids():
    queue = IdRingBuffer(4, [2])
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


def test_moco_queue_state_round_trip():
    queue = IdRingBuffer(5, [3])
    queue.enqueue(torch.randn(4, 3), torch.arange(4))
    fresh = IdRingBuffer(5, [3])
    fresh.load_state_dict(queue.state_dict())
    assert torch.equal(fresh.contents()[0], queue.contents()[0])
    assert torch.equal(fresh.ids, queue.ids) and int(fresh.ptr) == 4


def test_moco_queue_rejects_batches_larger_than_itself():
    with pytest.raises(ValueError, match="queue_size"):
        IdRingBuffer(2, [3]).enqueue(torch.zeros(3, 3), torch.arange(3))


def test_moco_queue_starts_full_of_random_unit_keys_that_are_nobodys():
    from ifnd.models.ring_buffer import RANDOM_ID

    queue = IdRingBuffer(4, [3])
    queue.fill_random(torch.Generator().manual_seed(0))
    keys, ids = queue.contents()
    assert keys.shape == (4, 3) and torch.allclose(keys.norm(dim=1), torch.ones(4)) and (ids == RANDOM_ID).all()
    queue.enqueue(torch.ones(2, 3), torch.tensor([5, 6]))  # real keys replace the random ones, oldest first
    assert queue.contents()[1].tolist() == [5, 6, RANDOM_ID, RANDOM_ID]
