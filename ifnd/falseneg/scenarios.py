"""Hand-made embeddings where k-means follows the classes, or a nuisance factor: the guard's sanity checks.

Points of 4 classes x 3 fonts in 8 dimensions, one axis per class and per font. When the class axes
dominate, k = 4 clusters are the classes (pair precision about 1); when the font axes dominate, k = 4
clusters split the 3 fonts (pair precision about 0.25), as k-means on rendered characters follows
fonts more than characters. Any label-free estimate of precision must rank the first above the second;
``tools/calibrate_reliability.py`` fits only estimators that do.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ifnd.falseneg.clustering import spherical_kmeans
from ifnd.falseneg.reliability import level_signals, restart_assignments

CLASSES, FONTS = 4, 3


def classes_by_fonts(class_scale: float, font_scale: float, seed: int = 0,
                     n_per: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features [4 * 3 * n_per, 8] L2-normalised, classes [N])``: class and font axes scaled, noise 0.15."""
    g = torch.Generator().manual_seed(seed)
    axes = torch.eye(8)
    classes = torch.arange(CLASSES).repeat_interleave(FONTS * n_per)
    fonts = torch.arange(FONTS).repeat_interleave(n_per).repeat(CLASSES)
    x = class_scale * axes[classes] + font_scale * axes[CLASSES + fonts]
    return F.normalize(x + 0.15 * torch.randn(len(classes), 8, generator=g), dim=1), classes


CLASS_FOLLOWING = (3.0, 0.3)
"""``classes_by_fonts`` scales where the classes dominate."""
NUISANCE_FOLLOWING = (0.3, 3.0)
"""``classes_by_fonts`` scales where the fonts dominate."""


def cluster_with_restart(features: torch.Tensor, k: int = CLASSES,
                         seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(assignments [N], centroids [k, D], restart [N])``: k-means, best of 5 runs (with k = 4 random seeds
    often start two in one blob), and a restart by the same procedure on 10 points per cluster."""
    result = spherical_kmeans(features.numpy(), k, nredo=5, seed=seed)
    assignments = torch.from_numpy(result.assignments)
    restart = restart_assignments(features, assignments, k, 10, 20, torch.Generator().manual_seed(seed), nredo=5)
    return assignments, torch.from_numpy(result.centroids), restart


def scenario_signals(scales: tuple[float, float], seed: int) -> dict[str, float]:
    """The round signals of :func:`~ifnd.falseneg.reliability.level_signals` on one scenario, every sample accepted."""
    features, _ = classes_by_fonts(*scales, seed=seed)
    assignments, centroids, restart = cluster_with_restart(features, seed=seed)
    return level_signals(features, assignments, centroids, restart, torch.Generator().manual_seed(seed))
