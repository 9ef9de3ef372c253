"""One rule for every random stream of a run: :func:`derive_seed` of the run's seed and keys.

Each stream is named by a tuple of keys, for example ``("order", epoch)`` for the data order
of an epoch, ``("views", epoch, index)`` for one sample's augmentations and
``("draws", epoch, step, rank)`` for one rank's negative draws at one step. A stream depends
only on its keys, never on what ran before it, so a run stopped and resumed at any step sees
the same random numbers as one that never stopped, whatever the number of loader workers.
"""

from __future__ import annotations

import hashlib
import random
import struct
from typing import Callable, TypeVar

import numpy as np
import torch

T = TypeVar("T")


def derive_seed(seed: int, *keys: int | str) -> int:
    """A 63-bit seed for the stream ``keys`` of a run seeded with ``seed`` (stable across runs and platforms)."""
    digest = hashlib.blake2b(repr((int(seed), *keys)).encode(), digest_size=8).digest()
    return struct.unpack("<Q", digest)[0] & 0x7FFF_FFFF_FFFF_FFFF


def generator(seed: int, *keys: int | str, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with :func:`derive_seed` of ``keys``."""
    return torch.Generator(device=device).manual_seed(derive_seed(seed, *keys))


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (weight initialisation at start-up)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seeded_call(seed: int, fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)`` with torch, Python and numpy seeded from ``seed``; the global states are left as they were.

    For augmentations drawn from the global generators (torchvision transforms): the result
    depends on ``seed`` alone, not on which worker process ran it or in what order.
    """
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        try:
            return fn(*args)
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
