"""Atomic, safe-to-load checkpoints and the RNG state they carry.

A checkpoint is a dict of state_dicts and plain values, written to a temporary file
and renamed over the target (a crash mid-write never leaves a torn file), and read
with ``torch.load(weights_only=True)`` (no arbitrary code runs on load).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ifnd.runtime import distributed as dist


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or from an incompatible run."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` to ``path`` atomically (temp file in the same folder + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


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
    """``auto`` -> ``run_dir/checkpoints/last.pt`` when it exists; a path -> that path; None -> None.

    Under torchrun every rank must see the same file (rank 0 writes it): a node that does not
    would start afresh while the others resume, so a disagreement is refused here.
    """
    if not resume:
        path = None
    elif resume == "auto":
        last = Path(run_dir) / "checkpoints" / "last.pt"
        path = last if last.is_file() else None
    else:
        path = Path(resume)
    views = dist.all_objects(None if path is None else (str(path), path.is_file()))
    if any(view != views[0] for view in views):
        raise CheckpointError(
            f"the ranks do not see the same checkpoint to resume from (rank: (path, exists) = {dict(enumerate(views))}); "
            "put output_dir (and any --resume path) on a file system that every node mounts"
        )
    return path


def check_compatible(saved_config: dict[str, Any], current: Any, keys: Sequence[str]) -> None:
    """Refuse a checkpoint whose config differs from ``current`` at any of ``keys`` (dotted).

    The one compatibility rule of every command: each task names the keys its weights and
    state depend on (architecture, vocabulary, memory size, ...).
    """
    for dotted in keys:
        saved: Any = saved_config
        for part in dotted.split("."):
            saved = saved.get(part) if isinstance(saved, dict) else None
        now = current.get(dotted)
        if saved != now:
            raise CheckpointError(
                f"checkpoint was written with {dotted}={saved!r} but the config says {now!r}; "
                f"use a matching config (--set {dotted}={saved}) or a fresh output_dir"
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
