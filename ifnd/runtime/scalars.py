"""TensorBoard scalars written by rank 0 only (a no-op on the other ranks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter


class ScalarWriter:
    """``prefix/key`` scalars of a run's numeric values; ``log_dir=None`` writes nothing.

    Args:
        log_dir: the run's ``tensorboard/`` folder on rank 0, None elsewhere.
    """

    def __init__(self, log_dir: Path | None):
        self.writer = SummaryWriter(str(log_dir)) if log_dir is not None else None

    def add(self, values: dict[str, Any], step: int, prefix: str) -> None:
        """Every int or float of ``values`` except ``epoch`` (the x axis) at ``step``."""
        if self.writer is None:
            return
        for key, value in values.items():
            if isinstance(value, (int, float)) and key != "epoch":
                self.writer.add_scalar(f"{prefix}/{key}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
