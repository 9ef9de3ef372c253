"""FIFO memory of momentum-encoder embeddings keyed by sample (image) id.

The memory holds many more candidates than a batch, which is what makes false
negatives frequent and sampling among them worthwhile (fne.md, step 2). All state lives
in registered buffers, so it moves with ``.to(device)`` and is saved in checkpoints.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

EMPTY_ID = -1
"""Id stored in slots that were never written."""


class MomentumMemory(nn.Module):
    """FIFO buffer of image and text embeddings with their sample ids.

    Buffers:
        image_feats: ``[size, dim]`` float, image embeddings.
        text_feats: ``[size, dim]`` float, text embeddings.
        ids: ``[size]`` long, sample (image) id of each slot, :data:`EMPTY_ID` when empty.
        ptr: 0-d long, the slot the next enqueued entry goes to.
    """

    def __init__(self, size: int, dim: int, dtype: torch.dtype = torch.float32):
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"size and dim must be positive, got size={size}, dim={dim}")
        self.register_buffer("image_feats", torch.zeros(size, dim, dtype=dtype))
        self.register_buffer("text_feats", torch.zeros(size, dim, dtype=dtype))
        self.register_buffer("ids", torch.full((size,), EMPTY_ID, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        """Number of slots."""
        return self.ids.shape[0]

    @torch.no_grad()
    def enqueue(self, image_feats: Tensor, text_feats: Tensor, ids: Tensor) -> None:
        """Write a batch at the pointer, wrapping around and overwriting the oldest entries.

        Args:
            image_feats: ``[B, dim]`` float, image embeddings (detached here).
            text_feats: ``[B, dim]`` float, text embeddings (detached here).
            ids: ``[B]`` long, non-negative sample ids.

        Raises:
            ValueError: on mismatched shapes, ``B > size`` or a negative id.
        """
        batch = ids.shape[0]
        expected = (batch, self.image_feats.shape[1])
        if ids.dim() != 1 or image_feats.shape != expected or text_feats.shape != expected:
            raise ValueError(
                f"expected image/text feats {expected} and ids [{batch}], got "
                f"{tuple(image_feats.shape)}, {tuple(text_feats.shape)}, {tuple(ids.shape)}"
            )
        if batch > self.size:
            raise ValueError(f"batch of {batch} does not fit a memory of {self.size}")
        if bool((ids < 0).any()):
            raise ValueError("sample ids must be non-negative")
        slots = (self.ptr + torch.arange(batch, device=self.ids.device)) % self.size
        self.image_feats[slots] = image_feats.to(self.image_feats)
        self.text_feats[slots] = text_feats.to(self.text_feats)
        self.ids[slots] = ids.to(self.ids)
        self.ptr.copy_((self.ptr + batch) % self.size)

    def _filled(self) -> int:
        """Number of filled slots. Slots are written in order from 0, so they form a prefix."""
        return self.size if int(self.ids[-1]) != EMPTY_ID else int(self.ptr)

    def contents(self) -> tuple[Tensor, Tensor, Tensor]:
        """The filled slots, in slot order, as views of the buffers (no copy; the next
        :meth:`enqueue` overwrites them in place).

        Returns:
            ``(image_feats [F, dim], text_feats [F, dim], ids [F] long)`` with ``F``
            the number of filled slots.
        """
        filled = self._filled()
        return self.image_feats[:filled], self.text_feats[:filled], self.ids[:filled]

    def positive_mask(self, anchor_ids: Tensor) -> Tensor:
        """Which filled slots share an anchor's id (known positives, never negatives).

        Args:
            anchor_ids: ``[B]`` long, the anchors' sample ids.

        Returns:
            ``[B, F]`` bool, columns in the order of :meth:`contents`.
        """
        return anchor_ids.unsqueeze(1) == self.ids[: self._filled()].unsqueeze(0)
