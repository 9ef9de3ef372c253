"""A resumable, distributed-aware epoch sampler.

Each epoch the dataset indices are shuffled with the stream ``("order", epoch)`` of the run's
seed (:func:`~ifnd.runtime.seeding.derive_seed`) and cut into global batches of
``batch_size x num_replicas``; rank ``r`` takes the ``r``-th block of ``batch_size`` of every
global batch. Gathering the ranks' batches in rank order therefore gives back the global
batch in the order one process would see it (exact parity between one process and
``torchrun``). ``start_step`` skips the first batches of the epoch, so a run resumed from a
mid-epoch checkpoint continues with exactly the batches it had not yet seen; torch's
``DistributedSampler`` cannot skip, hence our own.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler

from ifnd.config import ConfigError
from ifnd.runtime.seeding import derive_seed


class ResumableSampler(Sampler[int]):
    """Yields this rank's dataset indices for one epoch, from batch ``start_step`` on.

    Args:
        num_samples: dataset size ``N``.
        batch_size: samples per step and rank ``B``.
        seed: the run's seed.
        num_replicas, rank: the process group (1, 0 in one process).
        drop_last: ``True``: ``N // (B * num_replicas)`` full steps (the remainder waits for the
            next epoch's shuffle); ``False`` (one process only): a last, smaller batch.
        batch_key: the config key of ``batch_size``, named in the error message.
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int = 0, num_replicas: int = 1, rank: int = 0,
                 drop_last: bool = True, batch_key: str = "train.batch_size"):
        if num_samples <= 0:
            raise ConfigError("the training set is empty; check data.* (or the labelled subset)")
        if not drop_last and num_replicas > 1:
            raise ValueError("drop_last=False needs a single process")
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.num_replicas, self.rank, self.drop_last = num_replicas, rank, drop_last
        global_batch = batch_size * num_replicas
        self.steps_per_epoch = num_samples // global_batch if drop_last else -(-num_samples // batch_size)
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"{batch_key}={batch_size} x {num_replicas} process(es) is larger than the {num_samples} training "
                f"samples; lower {batch_key}"
            )
        self.epoch = 0
        self.start_step = 0

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch = epoch
        self.start_step = start_step

    def epoch_indices(self) -> torch.Tensor:
        """This rank's full index order for the epoch: ``[steps_per_epoch * batch_size]`` (or less without drop_last)."""
        generator = torch.Generator().manual_seed(derive_seed(self.seed, "order", self.epoch))
        order = torch.randperm(self.num_samples, generator=generator)
        if not self.drop_last:
            return order
        used = order[: self.steps_per_epoch * self.batch_size * self.num_replicas]
        return used.view(self.steps_per_epoch, self.num_replicas, self.batch_size)[:, self.rank].reshape(-1)

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_indices()[self.start_step * self.batch_size:].tolist())

    def __len__(self) -> int:
        per_epoch = self.steps_per_epoch * self.batch_size if self.drop_last else self.num_samples
        return max(0, per_epoch - self.start_step * self.batch_size)
