"""A FIFO ring buffer of embeddings that remembers the sample (dataset) id of each entry.

One class serves the MoCo queue (one field: the keys) and FNE's momentum memory of
image-text matching (two fields: image and text embeddings). lightly's ``MemoryBankModule``
keeps features only and is not part of a model's state: false-negative detection needs to
know *which sample* every stored embedding came from, and a resumed run must continue with
the same buffer. Hence this small module: all of its state lives in registered buffers, so it
moves with ``.to(device)`` and ``state_dict()`` saves it.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

EMPTY_ID = -1
"""Id stored in slots that were never written."""

RANDOM_ID = -2
"""Id of the random keys a queue starts with (:meth:`IdRingBuffer.fill_random`): no sample's, never a false negative."""


class IdRingBuffer(nn.Module):
    """``size`` slots, each holding one row of every field and a sample id.

    Buffers:
        ``<name>``: ``[size, dim]`` float for each field name (e.g. ``keys``, or ``image_feats`` and ``text_feats``).
        ids: ``[size]`` long, the sample id of each slot, :data:`EMPTY_ID` when empty.
        ptr: 0-d long, the slot the next entry goes to.

    Example::

        queue = IdRingBuffer(4096, [128])                 # MoCo: one field "keys"
        keys, ids = queue.contents()                       # [F, 128], [F] with F <= 4096 filled slots
        queue.enqueue(k, batch_ids)
        memory = IdRingBuffer(8192, [1024, 1024], names=("image_feats", "text_feats"))
        images, texts, ids = memory.contents()
    """

    def __init__(self, size: int, dims: Sequence[int], names: Sequence[str] = ("keys",), dtype: torch.dtype = torch.float32):
        super().__init__()
        if size < 1 or not dims or min(dims) < 1:
            raise ValueError(f"size and dims must be positive, got size={size}, dims={list(dims)}")
        if len(names) != len(dims):
            raise ValueError(f"one name per field: names={list(names)}, dims={list(dims)}")
        self.names = tuple(names)
        for name, dim in zip(names, dims):
            self.register_buffer(name, torch.zeros(size, dim, dtype=dtype))
        self.register_buffer("ids", torch.full((size,), EMPTY_ID, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @classmethod
    def from_config(cls, cfg: Any) -> "IdRingBuffer":
        """The MoCo queue: ``moco.queue_size`` keys of width ``model.proj_dim``."""
        return cls(cfg.moco.queue_size, [cfg.model.proj_dim])

    @classmethod
    def pairs(cls, size: int, dim: int) -> "IdRingBuffer":
        """FNE's image-text memory: image and text embeddings ``[size, dim]`` keyed by image id."""
        return cls(size, [dim, dim], names=("image_feats", "text_feats"))

    @torch.no_grad()
    def fill_random(self, generator: torch.Generator) -> None:
        """Fill every slot with random unit rows (id :data:`RANDOM_ID`), as MoCo's reference code starts its queue.

        An empty MoCo queue leaves the first step without negatives (a zero loss); random keys
        are uninformative negatives that the first batches push out.
        """
        for buffer in self.fields():
            rows = torch.randn(buffer.shape, generator=generator)
            buffer.copy_(torch.nn.functional.normalize(rows, dim=1))
        self.ids.fill_(RANDOM_ID)

    @property
    def size(self) -> int:
        """Number of slots."""
        return self.ids.shape[0]

    def fields(self) -> list[Tensor]:
        """The field buffers ``[size, dim]``, in the order of ``names``."""
        return [getattr(self, name) for name in self.names]

    @torch.no_grad()
    def enqueue(self, *rows: Tensor) -> None:
        """Write ``rows = (*fields [B, dim], ids [B])`` over the oldest entries (wrapping around).

        Raises:
            ValueError: on mismatched shapes, ``B > size`` or a negative id.
        """
        *feats, ids = rows
        batch = ids.shape[0]
        buffers = self.fields()
        expected = [(batch, b.shape[1]) for b in buffers]
        if ids.dim() != 1 or len(feats) != len(buffers) or [tuple(f.shape) for f in feats] != expected:
            raise ValueError(f"expected fields {expected} and ids [{batch}], got "
                             f"{[tuple(f.shape) for f in feats]} and {tuple(ids.shape)}")
        if batch > self.size:
            raise ValueError(f"a batch of {batch} does not fit a buffer of {self.size} entries; "
                             "raise moco.queue_size (or negatives.memory_size)")
        if bool((ids < 0).any()):
            raise ValueError("sample ids must be non-negative")
        slots = (self.ptr + torch.arange(batch, device=self.ids.device)) % self.size
        for buffer, feat in zip(buffers, feats):
            buffer[slots] = feat.to(buffer)
        self.ids[slots] = ids.to(self.ids)
        self.ptr.copy_((self.ptr + batch) % self.size)

    def _filled(self) -> int:
        """Number of filled slots. Slots are written in order from 0, so they form a prefix."""
        return self.size if int(self.ids[-1]) != EMPTY_ID else int(self.ptr)

    def contents(self) -> tuple[Tensor, ...]:
        """``(*fields [F, dim], ids [F])`` of the filled slots in slot order, as views of the buffers.

        No copy: the next :meth:`enqueue` overwrites them in place, so clone what a loss keeps
        for its backward pass.
        """
        filled = self._filled()
        return (*(b[:filled] for b in self.fields()), self.ids[:filled])

    def positive_mask(self, anchor_ids: Tensor) -> Tensor:
        """``[B, F]`` bool: which filled slots hold an anchor's own id (``anchor_ids [B]``), never negatives."""
        return anchor_ids.unsqueeze(1) == self.ids[: self._filled()].unsqueeze(0)
