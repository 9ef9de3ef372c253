"""``infonce``: InfoNCE (SimCLR's NT-Xent, MoCo's loss) under the detector's masks (:func:`~ifnd.losses.info_nce`)."""

from __future__ import annotations

from typing import Any, Callable

import torch

from ifnd.losses import LossMasks, info_nce


def build(cfg: Any) -> Callable[[torch.Tensor, LossMasks], torch.Tensor]:
    """:func:`~ifnd.losses.info_nce`; it has no keys of its own."""
    return info_nce
