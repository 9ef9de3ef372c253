"""Image sources: each yields ``(PIL.Image RGB, label)`` pairs.

* :func:`load_digits_split` — scikit-learn's bundled handwritten digits (1,797 real
  8x8 images, 10 classes), resized; ships with scikit-learn, so it works offline.
* :func:`load_fashion_mnist` — Fashion-MNIST (70,000 images) from Debian's package
  ``dataset-fashion-mnist``, a torchvision root, or a torchvision download.
* :class:`ImageFileDataset` — ``ImageFolder`` directories and ``path label`` file lists,
  with empty or unreadable images skipped (counted) or refused, as configured.
"""

from __future__ import annotations

import gzip
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
FASHION_MNIST_DEBIAN = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)


class DataError(RuntimeError):
    """The data cannot be used as configured; the message says how to fix it."""


class ArrayImageDataset(Dataset):
    """Grayscale images held in memory as ``uint8 [N, H, W]`` with labels ``[N]``.

    Returns ``(PIL RGB image, int label)``.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, classes: Sequence[str]):
        if images.ndim != 3 or images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 [N, H, W], got {images.dtype} {images.shape}")
        self.images = images
        self.labels = labels.astype(np.int64)
        self.classes = list(classes)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.images[index], mode="L").convert("RGB"), int(self.labels[index])


def load_digits_split(image_size: int, test_fraction: float = 0.2) -> tuple[ArrayImageDataset, ArrayImageDataset]:
    """scikit-learn digits resized to ``image_size``; fixed stratified split (seed 0)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    raw = (digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)  # [1797, 8, 8]
    images = np.stack([
        np.asarray(Image.fromarray(img, mode="L").resize((image_size, image_size), Image.BILINEAR)) for img in raw
    ])
    train_idx, test_idx = train_test_split(
        np.arange(len(images)), test_size=test_fraction, random_state=0, stratify=digits.target
    )
    classes = [str(c) for c in range(10)]
    return (
        ArrayImageDataset(images[train_idx], digits.target[train_idx], classes),
        ArrayImageDataset(images[test_idx], digits.target[test_idx], classes),
    )


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def load_fashion_mnist(root: str = "") -> tuple[ArrayImageDataset, ArrayImageDataset]:
    """Fashion-MNIST train (60,000) and test (10,000) splits at 28 px.

    Looks in ``root``, ``root/FashionMNIST/raw`` (a torchvision root) and Debian's
    ``/usr/share/datasets/fashion-mnist``; then tries a torchvision download into
    ``root`` (or ``./data_cache``) where a network exists.
    """
    candidates = [Path(p) for p in (root, os.path.join(root, "FashionMNIST", "raw")) if p] + [Path(FASHION_MNIST_DEBIAN)]
    for folder in candidates:
        files = {s: _find_idx(folder, f"{s}-idx{3 if 'images' in s else 1}-ubyte") for s in
                 ("train-images", "train-labels", "t10k-images", "t10k-labels")}
        if all(files.values()):
            arrays = {s: _read_idx(p) for s, p in files.items()}
            return (
                ArrayImageDataset(arrays["train-images"], arrays["train-labels"], FASHION_MNIST_CLASSES),
                ArrayImageDataset(arrays["t10k-images"], arrays["t10k-labels"], FASHION_MNIST_CLASSES),
            )
    download_root = root or "data_cache"
    try:
        from torchvision.datasets import FashionMNIST

        FashionMNIST(download_root, train=True, download=True)
        FashionMNIST(download_root, train=False, download=True)
    except Exception as err:  # no network, no permission, ...
        raise DataError(
            "Fashion-MNIST not found in "
            + ", ".join(map(str, candidates))
            + f" and the download failed ({err}). Install it with `apt-get install dataset-fashion-mnist` "
            "or set data.root to a folder holding the four *-ubyte(.gz) files."
        ) from err
    return load_fashion_mnist(download_root)


def _is_readable_image(path: Path) -> bool:
    """Cheap check at scan time: non-empty and a header PIL can identify."""
    try:
        if path.stat().st_size == 0:
            return False
        with Image.open(path) as img:
            img.verify()
        return True
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
        return False


class ImageFileDataset(Dataset):
    """Images on disk, from an ``ImageFolder`` tree or a ``path label`` file list.

    Empty or unreadable files are dropped at scan time with one warning that counts
    them (``on_corrupt="skip"``) or refused with the first bad path (``"error"``).
    Returns ``(PIL RGB image, int label)``.
    """

    def __init__(self, samples: list[tuple[Path, int]], classes: Sequence[str], on_corrupt: str = "skip",
                 source: str = ""):
        good = [(p, y) for p, y in samples if _is_readable_image(p)]
        bad = len(samples) - len(good)
        if bad and on_corrupt == "error":
            first = next(p for p, _ in samples if not _is_readable_image(p))
            raise DataError(
                f"{bad} empty or unreadable image(s) in {source}, e.g. {first}; remove them or set data.on_corrupt=skip"
            )
        if bad:
            log.warning("skipped %d empty or unreadable image(s) in %s", bad, source)
        if not good:
            raise DataError(f"no readable images in {source}; check data.root / data.train_list")
        self.samples = good
        self.skipped = bad
        self.classes = list(classes)
        self.labels = np.array([y for _, y in good], dtype=np.int64)

    @classmethod
    def from_folder(cls, root: str, on_corrupt: str = "skip") -> "ImageFileDataset":
        """Every image of ``root/class_x/**``, each opened and checked now (training runs use the folder's
        index instead: :func:`ifnd.data.index.folder_source`)."""
        from ifnd.data.index import IndexSamples, scan_folder  # the index module builds on this one

        index = scan_folder(root)
        return cls(list(IndexSamples(index.root, index.paths, index.labels)), index.classes, on_corrupt, source=root)

    @classmethod
    def from_list(cls, list_file: str, base: str = "", on_corrupt: str = "skip") -> "ImageFileDataset":
        path = Path(list_file)
        if not list_file or not path.is_file():
            raise DataError(f"file list {list_file!r} does not exist; set data.train_list / data.test_root to a text file of 'path label' lines")
        samples = []
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            parts = line.rsplit(maxsplit=1)
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                raise DataError(f"{list_file}:{number}: expected 'path label', got {line!r}")
            samples.append((Path(base) / parts[0], int(parts[1])))
        if not samples:
            raise DataError(f"file list {list_file!r} is empty")
        num_classes = max(y for _, y in samples) + 1
        return cls(samples, [str(c) for c in range(num_classes)], on_corrupt, source=list_file)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        path, label = self.samples[index]
        with Image.open(path) as img:
            return img.convert("RGB"), label
