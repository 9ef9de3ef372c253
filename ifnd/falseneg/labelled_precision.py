"""A level's pair precision read from a few labelled samples: the guard's estimate with ``detection.guard_labelled_share``.

No label-free signal we measured ranks pair precision across settings (docs/ifnd.md, 'Knowing when
detection is wrong'): a clustering that follows a nuisance factor (fonts) is as compact and as stable
as one that follows the classes, and only labels tell them apart. Users who judge their encoder by
semi-supervised fine-tuning already hold a labelled share of the training set (SimCLR's 1% / 10%);
among those samples, the accepted table's pairs are counted exactly, so the estimate needs no fit
and cannot be out of setting. Its error is the sampling error of the subset's pairs.

The subset is the one the semi-supervised evaluation draws at the same share and seed
(:func:`ifnd.eval.semisup.balanced_subset`): the same images, labelled once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ifnd.config import ConfigError
from ifnd.eval.checkpoints import EvalError
from ifnd.eval.semisup import balanced_subset
from ifnd.falseneg.diagnostics import table_pair_counts


@dataclass(frozen=True)
class LabelledSubset:
    """The labelled training samples.

    Attributes:
        indices: ``[M]`` long, their positions in the training set.
        classes: ``[M]`` long, their classes.
    """

    indices: torch.Tensor
    classes: torch.Tensor

    @classmethod
    def draw(cls, labels: torch.Tensor, share: float, seed: int) -> "LabelledSubset":
        """``floor(share * N / C)`` samples of each of the C classes of ``labels [N]``, drawn with ``seed``.

        Raises:
            ConfigError: the share leaves a class without a labelled sample.
        """
        classes = np.asarray(labels.cpu(), dtype=np.int64)
        try:
            indices = balanced_subset(classes, share, seed, int(classes.max()) + 1)
        except EvalError as err:
            raise ConfigError(f"detection.guard_labelled_share: {err}".replace("--fraction", "a share")) from err
        picked = torch.from_numpy(indices)
        return cls(picked, labels.cpu()[picked].long())

    def pair_precision(self, accepted: torch.Tensor) -> tuple[float, int]:
        """``(precision, pairs)``: among the ordered pairs of labelled samples that share an accepted
        pseudo-label of ``accepted [N]`` (-1: not accepted), the share that also share a class; NaN when
        no such pair exists (nothing to judge)."""
        counts = table_pair_counts(accepted.cpu()[self.indices], self.classes)
        return (counts.precision if counts.detected else math.nan), counts.detected
