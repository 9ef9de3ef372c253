import pytest
import torch

from ifnd.data.sampler import ResumableSampler
from ifnd.data.sources import DataError
from ifnd.train.optim import warmup_cosine


def test_same_epoch_same_order_and_skipping_resumes_exactly():
    sampler = ResumableSampler(50, batch_size=8, seed=3)
    sampler.set_epoch(2)
    full = list(sampler)
    assert len(full) == 48 and len(set(full)) == 48  # 6 full batches, no repeats
    sampler.set_epoch(2, start_step=4)
    assert list(sampler) == full[32:]
    sampler.set_epoch(3)
    assert list(sampler) != full


def test_replicas_partition_the_padded_epoch():
    parts = []
    for rank in range(3):
        sampler = ResumableSampler(10, batch_size=2, seed=0, num_replicas=3, rank=rank)
        sampler.set_epoch(0)
        parts.append(sampler.epoch_indices())
    assert all(len(p) == 4 for p in parts)  # ceil(10/3)=4 per rank, 2 batches of 2
    assert set(torch.cat(parts).tolist()) == set(range(10))


def test_batch_larger_than_data_is_a_clear_error():
    with pytest.raises(DataError, match="lower train.batch_size"):
        ResumableSampler(10, batch_size=16)


def test_warmup_cosine_schedule():
    assert warmup_cosine(0, 100, 10) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(10, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 10) == pytest.approx(0.5)
    assert warmup_cosine(100, 100, 10) == pytest.approx(0.0)
