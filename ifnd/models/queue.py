"""A FIFO queue of key embeddings that remembers the dataset index of each key.

lightly's ``MemoryBankModule`` keeps features only and is not part of a model's
state: false-negative detection needs to know *which sample* every queued key came
from, and a resumed run must continue with the same queue. Hence this small module:
all of its state lives in registered buffers, so ``state_dict()`` saves it.
"""

from __future__ import annotations

import torch
from torch import nn


class IdQueue(nn.Module):
    """Ring buffer of ``size`` keys ``[size, dim]`` with their dataset ids ``[size]``.

    Empty slots have id -1 and are not returned by :meth:`contents`.

    Example::

        queue = IdQueue(4096, 128)
        keys, ids = queue.contents()        # [F, 128], [F] with F <= 4096 filled slots
        queue.enqueue(k.detach(), batch_ids)
    """

    def __init__(self, size: int, dim: int):
        super().__init__()
        if size <= 0:
            raise ValueError(f"queue size must be positive, got {size}")
        self.register_buffer("keys", torch.zeros(size, dim))
        self.register_buffer("ids", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return self.keys.shape[0]

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, ids: torch.Tensor) -> None:
        """Write ``keys [B, dim]`` and ``ids [B]`` over the oldest entries (wrapping around)."""
        batch = keys.shape[0]
        if batch > self.size:
            raise ValueError(f"cannot enqueue {batch} keys into a queue of {self.size}; raise moco.queue_size")
        slots = (self.ptr + torch.arange(batch, device=self.ptr.device)) % self.size
        self.keys[slots] = keys.to(self.keys.dtype)
        self.ids[slots] = ids.to(self.ids.device)
        self.ptr.copy_((self.ptr + batch) % self.size)

    def contents(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Filled entries: keys ``[F, dim]`` and ids ``[F]``, in slot order."""
        filled = self.ids >= 0
        return self.keys[filled], self.ids[filled]
