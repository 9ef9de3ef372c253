"""A run directory: the resolved ``config.yaml``, ``metrics.json`` and rank-0 TensorBoard scalars.

Only rank 0 writes; on the other ranks every method is a no-op, so callers need no rank checks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ifnd.config import Config, save_config
from ifnd.runtime import distributed as dist
from ifnd.runtime.scalars import ScalarWriter


class RunDir:
    """``output_dir`` of one command: created, with the resolved config saved, on rank 0.

    Args:
        cfg: the resolved config (``cfg.output_dir`` is the folder).
    """

    def __init__(self, cfg: Config):
        self.path = Path(cfg.output_dir)
        self.main = dist.is_main()
        if self.main:
            self.path.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.path / "config.yaml")
        self.scalars = ScalarWriter(self.path / "tensorboard" if self.main else None)

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        """``metrics.json`` (rank 0); NaN is written as JSON's ``NaN``."""
        if self.main:
            (self.path / "metrics.json").write_text(json.dumps(metrics, indent=2))

    def close(self) -> None:
        self.scalars.close()
