"""Image sources: each yields ``(PIL.Image RGB, label)`` pairs.

* :func:`load_digits_split` — scikit-learn's bundled handwritten digits (1,797 real
  8x8 images, 10 classes), resized; ships with scikit-learn, so it works offline.
* :func:`load_fashion_mnist` — Fashion-MNIST (70,000 images) from Debian's package
  ``dataset-fashion-mnist``, a torchvision root, or a torchvision download.
* :class:`ImageFileDataset` — ``ImageFolder`` directories and ``path label`` file lists,
  with empty or unreadable images skipped (counted) or refused, as configured.

Every source also has ``labels`` (``[N]``), ``classes``, ``undecodable`` (``[N]`` bool: the samples whose
file failed to decode and was replaced, shared with loader workers) and ``first(n)``.
"""

from __future__ import annotations

import copy
import gzip
import logging
import os
import zlib
from pathlib import Path
from typing import Callable, TypeVar, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ifnd.runtime.seeding import derive_seed

log = logging.getLogger(__name__)
T = TypeVar("T")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
FASHION_MNIST_DEBIAN = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)


class DataError(RuntimeError):
    """The data cannot be used as configured; the message says how to fix it."""

    def __init__(self, message: str):
        # A DataLoader raises a worker's error again in the training process with the worker's traceback
        # in the message: keep the worker's own one line.
        if "Original Traceback" in message:
            message = message.rsplit(f"{type(self).__name__}: ", 1)[-1].strip()
        super().__init__(message)


# What PIL raises on a file it cannot decode (truncated, corrupt, vanished since the scan).
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, zlib.error, Image.DecompressionBombError)
MAX_REPLACEMENTS = 100  # undecodable images in a row before giving up


def load_rgb(path: Path) -> Image.Image:
    """The image file at ``path``, decoded and converted as :func:`to_rgb` does."""
    with Image.open(path) as image:
        image.load()
        return to_rgb(image, path)


def to_rgb(image: Image.Image, path: Path | str) -> Image.Image:
    """``image`` as 8-bit RGB.

    16-bit grayscale (``I;16*``, and ``I`` as PIL opens 16-bit PNGs and TIFFs) is scaled by 255/65535,
    not clipped at 255 as ``convert("RGB")`` does; 32-bit float and ``I`` values outside 0..65535 have no
    known range and are refused naming the file. Every 8-bit mode goes through ``convert("RGB")``.
    """
    if image.mode.startswith("I"):
        pixels = np.asarray(image, dtype=np.int64)
        if pixels.size and (pixels.min() < 0 or pixels.max() > 65535):
            raise DataError(f"{path}: mode {image.mode} pixels span {pixels.min()}..{pixels.max()}, outside 16 bits; "
                            f"convert the file to 8 or 16 bits")
        image = Image.fromarray(((pixels * 255 + 32767) // 65535).astype(np.uint8), mode="L")
    elif image.mode == "F":
        raise DataError(f"{path}: mode F (32-bit float pixels) has no range to scale to 8 bits; "
                        f"convert the file to 8 or 16 bits")
    try:
        return image.convert("RGB")
    except ValueError as err:
        raise DataError(f"{path}: cannot convert mode {image.mode} to RGB ({err}); convert the file to RGB") from None


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
        self.undecodable = torch.zeros(len(images), dtype=torch.bool)  # in memory: never

    def first(self, n: int) -> "ArrayImageDataset":
        """The first ``n`` samples."""
        return ArrayImageDataset(self.images[:n], self.labels[:n], self.classes)

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
    The scan reads headers only, so a file can still fail to decode when loaded (a
    truncated JPEG): ``"error"`` then raises naming the file; ``"skip"`` warns naming it,
    marks it in :attr:`undecodable` (shared memory, so that loader workers' marks reach
    the training process) and returns another sample instead, drawn from the stream
    ``("undecodable", index, attempt)`` of ``seed``: the same one in every epoch, worker
    and resumed run. Returns ``(PIL RGB image, int label)``.
    """

    def __init__(self, samples: list[tuple[Path, int]], classes: Sequence[str], on_corrupt: str = "skip",
                 source: str = "", seed: int = 0):
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
        self.skipped = bad
        self.classes = list(classes)
        self.on_corrupt, self.seed = on_corrupt, seed
        self._set_samples(good)

    def _set_samples(self, samples: Sequence[tuple[Path, int]], labels: np.ndarray | None = None) -> None:
        """``samples`` (``(path, label)``) and their ``labels [N]`` (read from the samples when not given)."""
        self.samples = samples
        self.labels = np.array([y for _, y in samples], dtype=np.int64) if labels is None else labels
        self.undecodable = torch.zeros(len(samples), dtype=torch.bool).share_memory_()

    def first(self, n: int) -> "ImageFileDataset":
        """The first ``n`` samples (replacements are drawn among them)."""
        head = copy.copy(self)
        head._set_samples(self.samples[:n])
        return head

    @classmethod
    def from_folder(cls, root: str, on_corrupt: str = "skip", seed: int = 0) -> "ImageFileDataset":
        """Every image of ``root/class_x/**``, each opened and checked now (training runs use the folder's
        index instead: :func:`ifnd.data.index.folder_source`)."""
        from ifnd.data.index import IndexSamples, scan_folder  # the index module builds on this one

        index = scan_folder(root)
        return cls(list(IndexSamples(index.root, index.paths, index.labels)), index.classes, on_corrupt, source=root,
                   seed=seed)

    @classmethod
    def from_list(cls, list_file: str, base: str = "", on_corrupt: str = "skip", seed: int = 0) -> "ImageFileDataset":
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
        return cls(samples, [str(c) for c in range(num_classes)], on_corrupt, source=list_file, seed=seed)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return self.decoded(index, load_rgb)

    def decoded(self, index: int, decode: Callable[[Path], T]) -> tuple[T, int]:
        """``decode(path)`` of sample ``index``, and its label, under ``data.on_corrupt``.

        ``decode`` reads the file itself (the fast view path decodes a JPEG without PIL, reduced where its crops
        allow); a decode error names the file (``error``) or moves to a seeded other sample (``skip``), as in
        :meth:`__getitem__`."""
        sample = index
        for attempt in range(MAX_REPLACEMENTS):
            path, label = self.samples[sample]
            try:
                return decode(path), label
            except DECODE_ERRORS as err:
                if self.on_corrupt == "error":
                    raise DataError(f"cannot decode image {path} ({err}); remove or repair it, or set "
                                    f"data.on_corrupt=skip to replace it by another image") from None
                if not self.undecodable[sample]:
                    log.warning("cannot decode image %s (%s); replaced by another image (data.on_corrupt=skip)",
                                path, err)
                    self.undecodable[sample] = True
            sample = derive_seed(self.seed, "undecodable", index, attempt) % len(self.samples)
        raise DataError(f"{MAX_REPLACEMENTS} images drawn in a row could not be decoded (the first: "
                        f"{self.samples[index][0]}); check the files under {self.samples[index][0].parent}")
