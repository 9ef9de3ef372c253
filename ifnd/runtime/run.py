"""A run directory: the resolved ``config.yaml``, ``metrics.json`` and rank-0 TensorBoard scalars.

Only rank 0 writes; on the other ranks every method is a no-op, so callers need no rank checks.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from ifnd.config import Config, ConfigError, save_config
from ifnd.runtime import distributed as dist
from ifnd.runtime.scalars import ScalarWriter

log = logging.getLogger(__name__)

# What a run leaves in its directory (deleted by --overwrite).
RUN_FILES = ("config.yaml", "metrics.json", "checkpoints", "tensorboard")


def holds_run(path: Path) -> bool:
    """Whether ``path`` holds results of a run: ``metrics.json`` or a checkpoint.

    A ``config.yaml`` alone (a run that stopped before its first checkpoint) holds nothing to lose.
    """
    checkpoints = path / "checkpoints"
    return (path / "metrics.json").is_file() or (checkpoints.is_dir() and any(checkpoints.iterdir()))


def claim_run_dir(path: str | Path, resume: str | None, overwrite: bool = False) -> None:
    """Refuse to start a new run into a directory that holds one (checked on rank 0, raised on every rank).

    Starting into ``path`` that holds a run (:func:`holds_run`) without resuming it (no
    ``resume``, or a checkpoint of another folder) would replace that run's files and mix
    TensorBoard events of both, so it is refused with the ways on; ``overwrite`` deletes the
    old run's files (:data:`RUN_FILES`) instead. An ``output_dir`` that is a file is refused too.
    """
    path = Path(path)
    problem = None
    if dist.is_main():
        own = resume == "auto" or (bool(resume) and Path(resume).resolve().parent == (path / "checkpoints").resolve())
        if path.exists() and not path.is_dir():
            problem = f"output_dir {str(path)!r} is a file, not a folder; pick a folder with --set output_dir=DIR"
        elif not own and holds_run(path):
            if overwrite:
                log.warning("--overwrite: deleting the run in %s", path)
                for target in (path / name for name in RUN_FILES):
                    if target.is_dir():
                        shutil.rmtree(target)
                    else:
                        target.unlink(missing_ok=True)
            else:
                problem = (f"output_dir {str(path)!r} already holds a run; continue it with --resume auto, start a new "
                           f"one with --set output_dir=DIR, or replace it with --overwrite")
    problem = dist.broadcast_object(problem)
    if problem is not None:
        raise ConfigError(problem)


def add_overwrite_arg(parser: argparse.ArgumentParser) -> None:
    """``--overwrite`` (into ``args.overwrite``) of every command that trains into a run directory."""
    parser.add_argument("--overwrite", action="store_true",
                        help="start a new run into an output_dir that holds one, deleting its config.yaml, "
                             "metrics.json, checkpoints/ and tensorboard/ (without it, such a directory is refused)")


class RunDir:
    """``output_dir`` of one command: created, with the resolved config saved, on rank 0.

    Args:
        cfg: the resolved config (``cfg.output_dir`` is the folder).
    """

    def __init__(self, cfg: Config):
        self.path = Path(cfg.output_dir)
        self.main = dist.is_main()
        if self.main:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except (FileExistsError, NotADirectoryError) as err:
                raise ConfigError(f"output_dir {str(self.path)!r} cannot be created ({err.strerror}: "
                                  f"{err.filename}); pick a folder with --set output_dir=DIR") from err
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
