"""The embedding bank in checkpoints: a side file about once per epoch, only the new rows in each checkpoint.

``detection.features=bank`` keeps ``[N, D]`` embeddings (656 MB at N = 1.28M, D = 128), and
every checkpoint needed them all for an exact resume. Here a checkpoint holds only the rows
written since the last *base* (a side file ``checkpoints/bank-<n>.pt`` with the whole bank);
a new base is written when those rows would exceed half the bank. Every epoch rewrites each
row once, so that is about once per epoch, and a step checkpoint carries at most N / 2 rows.
The two newest bases are kept (``last.pt`` always refers to the newest).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ifnd.runtime.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

KEEP_BASES = 2


class BankFile:
    """Tracks which bank rows changed since the last base, and splits/joins the bank state.

    Args:
        folder: the run's checkpoint folder (bases are written there).
        num_samples: N, rows of the bank.
    """

    def __init__(self, folder: str | Path, num_samples: int):
        self.folder = Path(folder)
        self.changed = torch.zeros(num_samples, dtype=torch.bool)
        self.base: str | None = None
        self.count = 0

    def mark(self, ids: torch.Tensor) -> None:
        """Rows ``ids [B]`` of the bank were written."""
        self.changed[ids.cpu()] = True

    def split(self, bank: torch.Tensor, filled: torch.Tensor) -> dict[str, Any]:
        """The checkpoint's share of ``bank [N, D]``: the base's name and the rows changed since.

        Writes a new base first when there is none yet or more than half the rows changed.
        """
        if self.base is None or 2 * int(self.changed.sum()) > len(self.changed):
            self.count += 1
            self.base = f"bank-{self.count}.pt"
            save_checkpoint({"bank": bank, "filled": filled}, self.folder / self.base)
            self.changed.zero_()
            for old in sorted(self.folder.glob("bank-*.pt"), key=lambda p: int(p.stem.split("-")[1]))[:-KEEP_BASES]:
                old.unlink()
        ids = self.changed.nonzero().squeeze(1)
        return {"base": self.base, "count": self.count, "ids": ids, "rows": bank[ids], "filled": filled}

    def join(self, state: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(bank [N, D], filled [N])`` from a checkpoint's share (:meth:`split`) and its base file."""
        path = self.folder / state["base"]
        if not path.is_file():
            raise CheckpointError(f"the checkpoint's embedding bank lives in {str(path)!r}, which is missing; "
                                  "resume from the run's last.pt with its checkpoints/ folder intact")
        bank = load_checkpoint(path)["bank"]
        bank[state["ids"]] = state["rows"]
        self.base, self.count = state["base"], int(state["count"])
        self.changed.zero_()
        self.changed[state["ids"]] = True
        return bank, state["filled"]
