"""Build data sets and loaders from a config."""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from ifnd.data.index import folder_source
from ifnd.runtime.sampler import ResumableSampler
from ifnd.runtime.stopping import ignore_stop_signals
from ifnd.data.sources import (
    DataError,
    ImageFileDataset,
    load_digits_split,
    load_fashion_mnist,
)
from ifnd.data.views import IndexedImages, build_eval_transform


def build_sources(cfg: Any) -> tuple[Dataset, Dataset | None]:
    """``(train, test)`` image sources yielding ``(PIL image, label)`` (see :mod:`ifnd.data.sources`); test may be None."""
    data = cfg.data
    if data.name == "digits":
        train, test = load_digits_split(data.image_size)
    elif data.name == "fashion_mnist":
        train, test = load_fashion_mnist(data.root)
    elif data.name == "imagefolder":
        train = folder_source(data.root, cfg.output_dir, data.on_corrupt, cfg.seed)  # indexed once into the run folder
        test = folder_source(data.test_root, cfg.output_dir, data.on_corrupt, cfg.seed) if data.test_root else None
    else:  # filelist
        train = ImageFileDataset.from_list(data.train_list, data.root, data.on_corrupt, cfg.seed)
        test = ImageFileDataset.from_list(data.test_root, data.root, data.on_corrupt, cfg.seed) if data.test_root else None
    if data.max_train_samples:
        train = train.first(data.max_train_samples)
    if len(train) == 0:
        raise DataError(f"the training set of data.name={data.name!r} is empty")
    return train, test


def source_labels(source: Dataset) -> torch.Tensor:
    """True labels of a source, ``[N]`` long (for kNN and diagnostics only)."""
    return torch.as_tensor(source.labels, dtype=torch.long)  # type: ignore[attr-defined]


def train_loader(dataset: Dataset, sampler: ResumableSampler, num_workers: int, pin_memory: bool) -> DataLoader:
    """Loader over ``dataset`` in the sampler's order, full batches only.

    A dataset with a ``collate`` method batches its own samples that way (:class:`~ifnd.data.fast_views.FastViews`:
    views stacked in their channels-last memory); others by torch's default."""
    return DataLoader(
        dataset,
        batch_size=sampler.batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        collate_fn=getattr(dataset, "collate", None),
        drop_last=True,
        persistent_workers=False,  # workers must see IndexedViews.set_epoch of each epoch
        worker_init_fn=ignore_stop_signals,
    )


def eval_loader(source: Dataset, image_size: int, normalize: bool, batch_size: int, num_workers: int,
                indices: Sequence[int] | None = None, resize: int = 0) -> DataLoader:
    """Deterministic loader yielding ``(images [B,3,S,S], labels [B], indices [B])`` in order.

    ``indices`` restricts it to those samples (e.g. one rank's shard); the yielded
    indices are always positions in ``source``. ``resize``: the shorter side before the centre crop
    (0: ``image_size``).
    """
    return DataLoader(
        IndexedImages(source, build_eval_transform(image_size, normalize, resize)),
        batch_size=batch_size,
        sampler=indices,
        shuffle=False,
        num_workers=num_workers,
        worker_init_fn=ignore_stop_signals,
    )
