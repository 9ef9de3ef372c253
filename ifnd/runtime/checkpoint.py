"""Atomic, safe-to-load checkpoints and the RNG state they carry.

A checkpoint is a dict of state_dicts and plain values, written to a temporary file
and renamed over the target (a crash mid-write never leaves a torn file; ``last.pt``
keeps the one it replaces as ``previous.pt``, for a file damaged after it was written),
and read with ``torch.load(weights_only=True)`` (no arbitrary code runs on load).
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ifnd.config import flatten, format_override
from ifnd.runtime import distributed as dist

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or from an incompatible run."""


def save_checkpoint(state: dict[str, Any], path: str | Path, keep_previous: bool = False) -> None:
    """Write ``state`` to ``path`` atomically (temp file in the same folder + rename).

    ``keep_previous``: the file being replaced becomes :func:`previous_path` (renamed, not
    copied), so a torn or unreadable new file leaves the one before it to resume from.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    if keep_previous and path.is_file():
        os.replace(path, previous_path(path))
    os.replace(tmp, path)


def previous_path(path: str | Path) -> Path:
    """Where :func:`save_checkpoint` keeps the checkpoint it replaced (``checkpoints/previous.pt``)."""
    return Path(path).with_name("previous.pt")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} not found; pass an existing file or --resume auto")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"checkpoint {str(path)!r} could not be read ({err}); it may be truncated or not an ifnd checkpoint") from err


def resolve_resume(resume: str | None, run_dir: str | Path) -> Path | None:
    """``auto`` -> ``run_dir/checkpoints/last.pt`` (or ``previous.pt`` when only it exists);
    a path -> that path; None -> None.

    Under torchrun every rank must see the same file (rank 0 writes it): a node that does not
    would start afresh while the others resume, so a disagreement is refused here.
    """
    if not resume:
        path = None
    elif resume == "auto":
        last = Path(run_dir) / "checkpoints" / "last.pt"
        path = next((p for p in (last, previous_path(last)) if p.is_file()), None)
    else:
        path = Path(resume)
    views = dist.all_objects(None if path is None else (str(path), path.is_file()))
    if any(view != views[0] for view in views):
        raise CheckpointError(
            f"the ranks do not see the same checkpoint to resume from (rank: (path, exists) = {dict(enumerate(views))}); "
            "put output_dir (and any --resume path) on a file system that every node mounts"
        )
    return path


def load_resume(resume: str | None, run_dir: str | Path) -> tuple[Path | None, dict[str, Any] | None]:
    """The checkpoint to resume from and its contents (``(None, None)``: start afresh).

    With ``auto``, an unreadable ``last.pt`` (a torn write, a full disk) falls back to the
    ``previous.pt`` that :func:`save_checkpoint` kept, with a warning.
    """
    path = resolve_resume(resume, run_dir)
    if path is None:
        return None, None
    try:
        return path, load_checkpoint(path)
    except CheckpointError as err:
        previous = previous_path(path)
        if resume != "auto" or path == previous or not previous.is_file():
            raise
        log.warning("%s; resuming from the checkpoint before it, %s", err, previous)
        return previous, load_checkpoint(previous)


# Keys that may differ between a checkpoint's config and the run resuming it: they change
# where things are written or read, how fast, or what is only monitored, never the weights.
RESUME_MAY_CHANGE: tuple[str, ...] = (
    "output_dir", "device", "data.num_workers", "data.root", "data.test_root",
    "train.log_every_steps", "train.checkpoint_every_steps", "train.eval_batch_size",
    "knn.every", "knn.k", "knn.temperature", "knn.baselines", "cpu_threads", "dist.timeout_minutes",
)


def check_compatible(saved_config: dict[str, Any], current: Any, may_change: Sequence[str] = ()) -> None:
    """Refuse a checkpoint whose config differs from ``current`` at any key but the allowed ones.

    The one compatibility rule of every command: every key is compared except
    :data:`RESUME_MAY_CHANGE` and the task's own ``may_change`` (e.g. ``train.epochs``
    where the schedule does not depend on it); keys the checkpoint's config lacks (added
    since it was written) are skipped. One error lists every difference.
    """
    allowed = set(RESUME_MAY_CHANGE) | set(may_change)
    saved, now = flatten(saved_config), flatten(current.to_dict())
    differ = [key for key in now if key in saved and key not in allowed and saved[key] != now[key]]
    if differ:
        changes = ", ".join(f"{key}={saved[key]!r} (now {now[key]!r})" for key in differ)
        undo = " ".join(f"--set {format_override(key, saved[key])}" for key in differ)
        raise CheckpointError(
            f"the checkpoint was written with another config: {changes}; resume with its values ({undo}) or start a "
            f"new run with --set output_dir=DIR (the keys a resume may change: docs/engine.md)"
        )


def rng_state() -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) RNG states, as tensors and lists safe for weights_only."""
    np_state = np.random.get_state()
    state = {
        "python": list(random.getstate()[1]),
        "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    random.setstate((3, tuple(state["python"]), None))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
