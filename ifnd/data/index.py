"""A compact index of an image folder: scanned once, written next to the run, reused on resume.

:func:`scan_folder` lists ``root/class_x/**/img.ext`` with ``os.scandir`` (file names and sizes
from the directory entries; no image is opened) into a :class:`FolderIndex` of numpy arrays:
paths relative to ``root`` as one fixed-width bytes array, labels and file sizes. Empty files
are left out of the training set by their size; unreadable ones surface when they are loaded.

:func:`folder_source` keeps the index at ``RUN/index/<folder>-<hash>.npz``: the first start
scans (rank 0; the other ranks wait and read the file), every later start and every resume
reads the file in well under a second. The arrays are three objects, not a Python object per
image, so forked loader workers share their pages instead of copying them as they touch them.
A folder that changed after the scan needs a new index: delete ``RUN/index/``.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ifnd.data.sources import IMAGE_EXTENSIONS, DataError, ImageFileDataset
from ifnd.runtime import distributed as dist

log = logging.getLogger(__name__)

VAL_LAYOUT_HINT = "the flat ILSVRC2012 validation folder? lay it out with: python tools/ilsvrc_val_layout.py"


@dataclass(frozen=True)
class FolderIndex:
    """An image folder's files: ``paths`` bytes ``[N]`` (relative to ``root``), ``labels`` int64 ``[N]``,
    ``sizes`` int64 ``[N]`` (bytes) and the class names."""

    root: str
    paths: np.ndarray
    labels: np.ndarray
    sizes: np.ndarray
    classes: tuple[str, ...]

    def save(self, path: Path) -> None:
        """Write atomically (a reader never sees half a file)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        with open(partial, "wb") as f:
            np.savez(f, root=np.array(self.root), paths=self.paths, labels=self.labels, sizes=self.sizes,
                     classes=np.array(self.classes))
        os.replace(partial, path)

    @classmethod
    def load(cls, path: Path) -> "FolderIndex":
        with np.load(path) as f:
            return cls(str(f["root"]), f["paths"], f["labels"], f["sizes"], tuple(f["classes"].tolist()))


def _files(root: str, folder: str) -> list[tuple[str, int]]:
    """``(path relative to root, size)`` of the image files under ``root/folder``, recursively, sorted by path."""
    found, stack = [], [folder]
    while stack:
        relative = stack.pop()
        with os.scandir(os.path.join(root, relative)) as entries:
            for entry in entries:
                if entry.is_dir():
                    stack.append(f"{relative}/{entry.name}")
                elif entry.name.lower().endswith(IMAGE_EXTENSIONS):
                    found.append((f"{relative}/{entry.name}", entry.stat().st_size))
    return sorted(found)


def scan_folder(root: str) -> FolderIndex:
    """Index ``root/class_x/**/img.ext`` (classes sorted by name, files by path) without opening a file."""
    folder = Path(root)
    if not root or not folder.is_dir():
        raise DataError(f"image folder {root!r} does not exist; set data.root to a folder laid out as root/class_x/img.jpg")
    classes = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())
    if not classes:
        loose = any(name.lower().endswith(IMAGE_EXTENSIONS) for name in os.listdir(folder))
        hint = f" ({VAL_LAYOUT_HINT})" if loose else ""
        raise DataError(f"image folder {root!r} has no class sub-folders; expected root/class_x/img.jpg{hint}")
    paths, labels, sizes = [], [], []
    for label, name in enumerate(classes):
        for path, size in _files(str(folder), name):
            paths.append(os.fsencode(path))
            labels.append(label)
            sizes.append(size)
    if not paths:
        raise DataError(f"image folder {root!r} holds no images with extensions {IMAGE_EXTENSIONS}")
    return FolderIndex(str(folder.resolve()), np.array(paths, dtype=bytes), np.array(labels, dtype=np.int64),
                       np.array(sizes, dtype=np.int64), tuple(classes))


def index_path(root: str, run_dir: str) -> Path:
    """``RUN/index/<folder name>-<hash of its absolute path>.npz``."""
    resolved = str(Path(root).resolve())
    digest = hashlib.blake2b(resolved.encode(), digest_size=6).hexdigest()
    return Path(run_dir) / "index" / f"{Path(resolved).name}-{digest}.npz"


def load_or_scan(root: str, run_dir: str) -> FolderIndex:
    """The index of ``root`` kept in ``run_dir``: read when there, else scanned by rank 0 and written."""
    path = index_path(root, run_dir)
    if not path.is_file() and dist.is_main():
        scan_folder(root).save(path)
        log.info("indexed %s into %s", root, path)
    dist.barrier()
    index = FolderIndex.load(path)
    if index.root != str(Path(root).resolve()):
        raise DataError(f"{path} indexes {index.root}, not {root}; delete it to rescan")
    return index


class IndexSamples(Sequence):
    """``(Path, label)`` of files ``paths`` (bytes, relative to ``root``), made on access (no object per image held)."""

    def __init__(self, root: str, paths: np.ndarray, labels: np.ndarray):
        self.root, self.paths, self.labels = Path(root), paths, labels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[Path, int]:  # type: ignore[override]
        return self.root / os.fsdecode(self.paths[i]), int(self.labels[i])


class FolderImages(ImageFileDataset):
    """An :class:`~ifnd.data.sources.ImageFileDataset` on a :class:`FolderIndex`: same samples, labels and
    loading; nothing opened at start."""

    def __init__(self, index: FolderIndex, on_corrupt: str = "skip", seed: int = 0):  # super().__init__ opens every file
        keep = index.sizes > 0
        empty = int((~keep).sum())
        if empty and on_corrupt == "error":
            raise DataError(f"{empty} empty image file(s) in {index.root}; remove them or set data.on_corrupt=skip")
        if empty:
            log.warning("skipped %d empty image file(s) in %s", empty, index.root)
        if not keep.any():
            raise DataError(f"no non-empty images in {index.root}; check data.root / data.test_root")
        labels, paths = (index.labels[keep], index.paths[keep]) if empty else (index.labels, index.paths)
        self._set_samples(IndexSamples(index.root, paths, labels), labels)
        self.skipped = empty
        self.classes = list(index.classes)
        self.on_corrupt, self.seed = on_corrupt, seed

    def first(self, n: int) -> "FolderImages":
        """The first ``n`` samples (replacements are drawn among them), still without a per-image object."""
        head = copy.copy(self)
        head._set_samples(IndexSamples(self.samples.root, self.samples.paths[:n], self.labels[:n]), self.labels[:n])
        return head


def folder_source(root: str, run_dir: str, on_corrupt: str = "skip", seed: int = 0) -> FolderImages:
    """The image folder ``root`` through its index in ``run_dir`` (see the module docstring); ``seed`` draws the
    replacements of undecodable images."""
    return FolderImages(load_or_scan(root, run_dir), on_corrupt, seed)
