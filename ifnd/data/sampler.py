"""A resumable, distributed-aware epoch sampler.

Like ``torch.utils.data.DistributedSampler`` (seeded shuffle per epoch, the index list
padded to a multiple of the number of replicas, each rank taking every
``num_replicas``-th index), plus ``start_step``: the first ``start_step`` batches of the
epoch are skipped, so a run resumed from a mid-epoch checkpoint continues with exactly
the batches it had not yet seen. torch's sampler cannot skip, hence our own.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler

from ifnd.data.sources import DataError


class ResumableSampler(Sampler[int]):
    """Yields this rank's dataset indices for one epoch, from batch ``start_step`` on."""

    def __init__(self, num_samples: int, batch_size: int, seed: int = 0, num_replicas: int = 1, rank: int = 0):
        if num_samples <= 0:
            raise DataError("the training set is empty")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.per_rank = -(-num_samples // num_replicas)  # ceil
        self.steps_per_epoch = self.per_rank // batch_size
        if self.steps_per_epoch == 0:
            raise DataError(
                f"train.batch_size={batch_size} is larger than the {self.per_rank} samples each process gets "
                f"({num_samples} samples, {num_replicas} process(es)); lower train.batch_size"
            )
        self.epoch = 0
        self.start_step = 0

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch = epoch
        self.start_step = start_step

    def epoch_indices(self) -> torch.Tensor:
        """This rank's full index order for the epoch, ``[steps_per_epoch * batch_size]`` long."""
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.num_samples, generator=generator)
        padded = torch.cat([order, order[: self.per_rank * self.num_replicas - self.num_samples]])
        mine = padded[self.rank:: self.num_replicas]
        return mine[: self.steps_per_epoch * self.batch_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_indices()[self.start_step * self.batch_size:].tolist())

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * self.batch_size
