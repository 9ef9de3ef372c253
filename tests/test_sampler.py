"""The engine's pure pieces: resumable sampler, seed streams, LR schedules."""

import pytest
import torch

from ifnd.config import ConfigError
from ifnd.runtime.sampler import ResumableSampler
from ifnd.runtime.schedules import scaled_lr, step_decay, warmup_cosine
from ifnd.runtime.seeding import derive_seed, seeded_call


def test_same_epoch_same_order_and_skipping_resumes_exactly():
    sampler = ResumableSampler(50, batch_size=8, seed=3)
    sampler.set_epoch(2)
    full = list(sampler)
    assert len(full) == 48 and len(set(full)) == 48  # 6 full batches, no repeats
    assert len(sampler) == 48
    sampler.set_epoch(2, start_step=4)
    assert list(sampler) == full[32:] and len(sampler) == 16
    sampler.set_epoch(3)
    assert list(sampler) != full


def test_ranks_take_their_block_of_every_global_batch():
    one = ResumableSampler(13, batch_size=6, seed=1)
    one.set_epoch(0)
    order = one.epoch_indices()  # 2 global batches of 6
    parts = []
    for rank in range(2):
        sampler = ResumableSampler(13, batch_size=3, seed=1, num_replicas=2, rank=rank)
        sampler.set_epoch(0)
        parts.append(sampler.epoch_indices().view(2, 3))
    # gathering the ranks' batches in rank order gives back one process's global batch
    assert torch.equal(torch.cat(parts, dim=1).reshape(-1), order)


def test_without_drop_last_every_sample_is_seen_once():
    sampler = ResumableSampler(10, batch_size=4, drop_last=False)
    assert sampler.steps_per_epoch == 3 and sorted(sampler) == list(range(10)) and len(sampler) == 10


def test_batch_larger_than_data_is_a_clear_error():
    with pytest.raises(ConfigError, match="lower train.batch_size"):
        ResumableSampler(10, batch_size=16)
    with pytest.raises(ConfigError, match="lower linear.batch_size"):
        ResumableSampler(10, batch_size=8, num_replicas=2, batch_key="linear.batch_size")


def test_derive_seed_depends_on_every_key_only():
    assert derive_seed(0, "views", 1, 2) == derive_seed(0, "views", 1, 2)
    seeds = {derive_seed(s, k, e, i) for s in (0, 1) for k in ("views", "draws") for e in (0, 1) for i in (0, 1)}
    assert len(seeds) == 16 and all(0 <= s < 2**63 for s in seeds)


def test_seeded_call_is_reproducible_and_leaves_the_global_generators_alone():
    torch.manual_seed(5)
    expected_next = torch.rand(1)
    torch.manual_seed(5)
    a = seeded_call(7, torch.rand, 3)
    assert torch.equal(a, seeded_call(7, torch.rand, 3)) and not torch.equal(a, seeded_call(8, torch.rand, 3))
    assert torch.equal(torch.rand(1), expected_next)


def test_warmup_cosine_schedule():
    assert warmup_cosine(0, 100, 10) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(10, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 10) == pytest.approx(0.5)
    assert warmup_cosine(100, 100, 10) == pytest.approx(0.0)


def test_step_decay_per_epoch_and_lr_scaling():
    steps = 5  # per epoch
    assert [step_decay(e * steps + 2, steps, 0.1, [2, 4]) for e in range(6)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    assert scaled_lr(0.3, 512, "linear") == pytest.approx(0.6) and scaled_lr(0.3, 512, "none") == 0.3
