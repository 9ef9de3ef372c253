"""One clustering round's levels: k-means on the chosen backend, then a confidence per sample.

``detection.kmeans_backend`` picks where k-means runs:

* ``torch`` (:mod:`ifnd.falseneg.kmeans_torch`): on the features' device, sharded over ranks —
  every rank clusters its own rows, the confidences are computed where the rows are, and only
  the ``[N]`` assignments and confidences (scalars) are gathered, so that the acceptance sees
  every sample and the label table ends identical on every rank;
* ``faiss`` (:mod:`ifnd.falseneg.clustering`): on one process, over all rows (faiss' GPU when its
  build has one, else the CPU);
* ``auto``: torch on CUDA (no faiss GPU build matches torch's CUDA 13 wheels, and sharding
  keeps every GPU busy), faiss on CPU (there the torch backend took 1.15x faiss's time for a
  whole round at N = 100k, k = 1k/2k/4k on 2 threads, ``tools/bench_round.py``: faiss stays).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ifnd.config import ConfigError
from ifnd.falseneg.clustering import multi_level_kmeans
from ifnd.falseneg.kmeans_torch import Shard, multi_level_kmeans_torch
from ifnd.runtime import distributed as dist

KMEANS_BACKENDS = ("auto", "torch", "faiss")
"""Names accepted by ``detection.kmeans_backend``."""

Confidence = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``(features [n, D], centroids [K, D], assignments [n]) -> [n]`` float confidence (higher is surer)."""


@dataclass
class LevelLabels:
    """One granularity level of a round, over the whole data set.

    Attributes:
        assignments: ``[N]`` long cluster of each sample, -1 where the sample was not clustered.
        confidence: ``[N]`` float32 confidence of each assignment, -1 where not clustered
            (below every real confidence: never accepted first).
        centroids: ``[K, D]`` float32 L2-normalised centres, on the CPU.
        inertia: sum of squared distances of the normalised points to their centroids.
    """

    assignments: torch.Tensor
    confidence: torch.Tensor
    centroids: torch.Tensor
    inertia: float


def resolve_backend(name: str, device: torch.device) -> str:
    """``torch`` or ``faiss`` for ``detection.kmeans_backend=name`` on ``device`` (see the module docstring)."""
    if name not in KMEANS_BACKENDS:
        raise ConfigError(f"detection.kmeans_backend={name!r} is not one of {KMEANS_BACKENDS}")
    if name != "auto":
        return name
    return "torch" if device.type == "cuda" else "faiss"


def scatter_to_samples(values: torch.Tensor, ids: torch.Tensor, num_samples: int, fill: float,
                       sharded: bool) -> torch.Tensor:
    """Every rank's ``values [n_r, C]`` at dataset ids ``ids [n_r]``, assembled into ``[num_samples, C]``.

    Rows no rank holds are ``fill``. Shards may differ in length (padded for the all-gather).
    Only ``C`` numbers per sample cross the ranks.
    """
    out = values.new_full((num_samples, values.shape[1]), fill)
    if not sharded:
        out[ids] = values
        return out
    size = int(dist.gather(torch.tensor([len(ids)], device=values.device)).max())
    padded = values.new_zeros(size, values.shape[1])
    padded_ids = ids.new_full((size,), -1)
    padded[: len(ids)], padded_ids[: len(ids)] = values, ids
    all_values, all_ids = dist.gather(padded), dist.gather(padded_ids)
    keep = all_ids >= 0
    out[all_ids[keep]] = all_values[keep]
    return out


def cluster_levels(
    x: torch.Tensor,
    ids: torch.Tensor,
    num_samples: int,
    ks: Sequence[int],
    confidence: Confidence,
    *,
    backend: str,
    hierarchical: bool = False,
    niter: int = 20,
    nredo: int = 1,
    seed: int = 0,
    init: str = "random",
    sharded: bool = False,
) -> list[LevelLabels]:
    """k-means at every granularity and a confidence per sample, gathered over the data set.

    Args:
        x: ``[n, D]`` float features of dataset ids ``ids [n]`` (this rank's shard when
            ``sharded``; all rows to cluster otherwise), on the device where the work runs.
        num_samples: N, size of the data set (ids lie in ``[0, N)``).
        ks: clusters per level; confidence: see :data:`Confidence`.
        backend: ``torch`` or ``faiss`` (resolved, see :func:`resolve_backend`).
        hierarchical, niter, nredo, seed, init: as in :func:`~ifnd.falseneg.clustering.multi_level_kmeans`
            (the torch backend supports ``init=random`` only).
        sharded: the rows are split over the ranks (torch backend only); every rank calls this.

    Returns:
        One :class:`LevelLabels` per entry of ``ks``, identical on every rank, on ``x``'s device.
    """
    ids = ids.to(x.device, torch.long)
    if backend == "torch":
        if init != "random":
            raise ConfigError(f"detection.kmeans_init={init} runs on faiss only; use detection.kmeans_backend=faiss "
                              "or kmeans_init=random")
        results = multi_level_kmeans_torch(x, ks, hierarchical, seed, niter=niter, nredo=nredo,
                                           shard=Shard(ids, num_samples, sharded))
        found = [(r.assignments, r.centroids, r.inertia) for r in results]
    elif backend == "faiss":
        if sharded:
            raise ValueError("the faiss backend clusters all rows in one process; pass sharded=False")
        results = multi_level_kmeans(x.detach().float().cpu().numpy(), ks, hierarchical=hierarchical, niter=niter,
                                     nredo=nredo, seed=seed, init=init)
        found = [(torch.from_numpy(r.assignments).to(x.device), torch.from_numpy(r.centroids).to(x.device), r.inertia)
                 for r in results]
    else:
        raise ValueError(f"backend must be 'torch' or 'faiss' (resolve 'auto' first), got {backend!r}")
    levels = []
    for assignments, centroids, inertia in found:
        conf = confidence(x, centroids, assignments)
        both = scatter_to_samples(torch.stack([assignments.double(), conf.double()], dim=1), ids, num_samples,
                                  -1.0, sharded)
        levels.append(LevelLabels(both[:, 0].long(), both[:, 1].float(), centroids.cpu(), inertia))
    return levels
