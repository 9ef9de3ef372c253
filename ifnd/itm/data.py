"""Image-caption data: three layouts, one :class:`ItmSplit`, and the torch datasets over it.

Layouts (``data.name``):

* ``karpathy`` — the Karpathy-split JSON (``dataset_coco.json`` / ``dataset_flickr30k.json``):
  ``images: [{filename, filepath?, split, sentences: [{raw, ...}]}]``, image files at
  ``data.root/filepath/filename``;
* ``features`` — precomputed image features ``data.root/{split}_ims.npy`` (``[N_img, D]``
  or region features ``[N_img, R, D]``) with ``data.root/{split}_caps.txt`` holding
  ``data.captions_per_image`` captions per image row, in order;
* ``demo`` — built in and offline: scikit-learn's handwritten digits with 5 generated
  captions per image (:mod:`ifnd.itm.demo_captions`). Many captions of different images
  say the same thing, which makes false negatives common; how common is set by
  ``data.caption_attributes`` and ``data.caption_bins`` and measured by :func:`caption_density`.

The caption-to-image map is always explicit (``caption_image``), never ``i // 5``, and
every training item carries its image id (the image's index in the split).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torchvision.transforms as T
from lightly.transforms.utils import IMAGENET_NORMALIZE
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from ifnd.runtime.seeding import derive_seed, seeded_call
from ifnd.data.sources import DataError, load_digits_split
from ifnd.data.views import build_eval_transform
from ifnd.itm.demo_captions import ATTRIBUTES, attribute_edges, caption_digits, caption_matches, image_facts
from ifnd.itm.text import Vocabulary, pad_tokens

DEMO_SPLITS = ("train", "val", "test")
DEMO_VAL_IMAGES = 160  # of the 360 held-out digits; the other 200 are the test split


@dataclass
class ItmSplit:
    """Images and captions of one split.

    Attributes:
        images: indexable; item ``i`` is a PIL image (image layouts) or a float array
            ``[D]`` / ``[R, D]`` (features layout).
        captions: ``[N_cap]`` raw caption strings.
        caption_image: ``[N_cap]`` int64, the image index of each caption.
        labels: ``[N_img]`` int64 class of each image where one is known (demo), else None;
            for diagnostics only.
        matches: ``[N_cap, N_img]`` bool, every image each caption fits, where the data know it
            (demo), else None: extended R@K counts a retrieval of any of them.
    """

    images: Sequence[Any]
    captions: list[str]
    caption_image: np.ndarray
    labels: np.ndarray | None = None
    matches: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.caption_image = np.asarray(self.caption_image, dtype=np.int64)
        if len(self.captions) != len(self.caption_image):
            raise DataError(f"{len(self.captions)} captions but {len(self.caption_image)} caption-image links")
        if len(self.captions) == 0:
            raise DataError("the split has no captions")

    @property
    def num_images(self) -> int:
        return len(self.images)

    def head(self, num_images: int) -> "ItmSplit":
        """The first ``num_images`` images with exactly their captions."""
        keep = np.flatnonzero(self.caption_image < num_images)
        return ItmSplit(
            _Head(self.images, num_images),
            [self.captions[i] for i in keep],
            self.caption_image[keep],
            None if self.labels is None else self.labels[:num_images],
            None if self.matches is None else self.matches[keep][:, :num_images],
        )


class _Head:
    """The first ``n`` items of an indexable."""

    def __init__(self, items: Sequence[Any], n: int):
        self.items, self.n = items, min(n, len(items))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Any:
        if not 0 <= index < self.n:
            raise IndexError(index)
        return self.items[index]


class _EveryNth:
    """Rows ``0, n, 2n, ...`` of an indexable: one image of a layout that repeats it for each of its ``n`` captions."""

    def __init__(self, items: Sequence[Any], n: int):
        self.items, self.n = items, n

    def __len__(self) -> int:
        return len(self.items) // self.n

    def __getitem__(self, index: int) -> Any:
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self.items[index * self.n]


class _PilImages:
    """Item ``i`` of an ``(image, label)`` source, the image only."""

    def __init__(self, source: Dataset):
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> Image.Image:
        return self.source[index][0]


class ImageFiles:
    """Image files opened on access as PIL RGB; a missing or unreadable file is a :class:`DataError`."""

    def __init__(self, paths: Sequence[Path]):
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Image.Image:
        path = self.paths[index]
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except (OSError, UnidentifiedImageError) as err:
            raise DataError(f"cannot read image {path} ({err}); check data.root") from err


# ---------------------------------------------------------------------------- loaders


def load_demo(split: str, image_size: int, attributes: tuple[int, int] = (1, 3), bins: int = 3) -> ItmSplit:
    """Built-in digits with generated captions that know which images they fit.

    ``train`` is scikit-learn digits' fixed training split (1,437 images); ``val`` (160 images)
    and ``test`` (200 images, 1,000 captions) split its test split. 5 captions each, naming
    ``attributes = (fewest, most)`` attributes binned in ``bins`` quantile bins of the training
    images (:func:`~ifnd.itm.demo_captions.caption_digits`; the defaults are the original demo).
    """
    if split not in DEMO_SPLITS:
        raise DataError(f"the demo data has splits {list(DEMO_SPLITS)}, not {split!r}")
    train, test = load_digits_split(image_size)
    source = train
    if split != "train":
        rows = np.arange(DEMO_VAL_IMAGES) if split == "val" else np.arange(DEMO_VAL_IMAGES, len(test))
        source = type(test)(test.images[rows], test.labels[rows], test.classes)
    facts = image_facts(source.images, source.labels, attribute_edges(train.images, bins))
    captions, caption_image, said = caption_digits(facts, DEMO_SPLITS.index(split), tuple(attributes), bins)
    return ItmSplit(_PilImages(source), captions, caption_image, source.labels, caption_matches(said, facts))


def caption_density(split: ItmSplit) -> dict[str, float]:
    """How common false negatives are in a split whose captions know every image they fit.

    Returns:
        ``images_per_caption``: images a caption fits, its own included, on average;
        ``fn_share_t2i``: of a caption's candidate images (every other image), the share that fit it;
        ``fn_share_i2t``: of an image's candidate captions (those of other images), the share that fit it;
        each averaged over the anchors. Empty when the split has no such annotation (``matches`` None).
    """
    if split.matches is None:
        return {}
    matches, own = split.matches, split.caption_image
    num_images, num_captions = split.num_images, len(split.captions)
    fits = matches.sum(axis=1)
    others = matches.copy()
    others[np.arange(num_captions), own] = False
    own_captions = np.bincount(own, minlength=num_images)
    other_captions = np.maximum(num_captions - own_captions, 1)
    return {
        "images_per_caption": float(fits.mean()),
        "fn_share_t2i": float(others.sum(axis=1).mean() / max(num_images - 1, 1)),
        "fn_share_i2t": float((others.sum(axis=0) / other_captions).mean()),
    }


def find_annotations(root: str, annotations: str) -> Path:
    """The Karpathy JSON: ``annotations`` when given, else the one ``dataset_*.json`` in ``root``."""
    if annotations:
        path = Path(annotations)
        if not path.is_file():
            raise DataError(f"Karpathy-split JSON {annotations!r} not found; set data.annotations to dataset_coco.json or dataset_flickr30k.json")
        return path
    found = sorted(Path(root).glob("dataset_*.json")) if root else []
    if len(found) != 1:
        raise DataError(
            f"expected exactly one dataset_*.json in data.root={root!r}, found {[p.name for p in found]}; "
            "set data.annotations to the Karpathy-split JSON"
        )
    return found[0]


def load_karpathy(annotations: Path, root: str, splits: Sequence[str]) -> ItmSplit:
    """Images (in JSON order) of the given splits with all their captions.

    Raises:
        DataError: unreadable JSON, missing image folder, empty selection, or a first
            image that does not exist.
    """
    folder = Path(root)
    if not root or not folder.is_dir():
        raise DataError(f"image folder data.root={root!r} does not exist; point it at the folder holding the images")
    try:
        entries = json.loads(Path(annotations).read_text())["images"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{annotations} is not a Karpathy-split JSON with an 'images' list ({err})") from err
    chosen = [e for e in entries if e.get("split") in splits]
    if not chosen:
        available = sorted({str(e.get("split")) for e in entries})
        raise DataError(f"no images of split(s) {list(splits)} in {annotations}; it has {available}")
    paths = [folder / e.get("filepath", "") / e["filename"] for e in chosen]
    if not paths[0].is_file():
        raise DataError(f"image {paths[0]} not found; data.root must hold filepath/filename of the JSON entries")
    captions = [s["raw"].strip() for e in chosen for s in e["sentences"]]
    caption_image = [i for i, e in enumerate(chosen) for _ in e["sentences"]]
    return ItmSplit(ImageFiles(paths), captions, np.array(caption_image))


def load_features(root: str, split: str, captions_per_image: int) -> ItmSplit:
    """``{split}_ims.npy`` (memory-mapped) and ``{split}_caps.txt`` (UTF-8) of ``root``: the SCAN layout.

    SCAN's precomputed bottom-up features are ``[N_img, 36, 2048]`` with ``captions_per_image``
    (5) consecutive caption lines per image, in splits ``train``, ``dev``, ``test`` and ``testall``
    (COCO's 5K test; ``itm-eval --split testall --folds 5`` is the 1K protocol). The older layout
    with one image row per caption (each image repeated ``captions_per_image`` times) is read as
    one image per group of rows.
    """
    ims_path, caps_path = Path(root) / f"{split}_ims.npy", Path(root) / f"{split}_caps.txt"
    for path in (ims_path, caps_path):
        if not path.is_file():
            raise DataError(f"{path} not found; data.root must hold {split}_ims.npy and {split}_caps.txt")
    try:
        feats = np.load(ims_path, mmap_mode="r")
    except (OSError, ValueError) as err:
        raise DataError(f"{ims_path} is not a readable .npy array ({err})") from err
    if feats.ndim not in (2, 3):
        raise DataError(f"{ims_path} must be [N_img, D] or [N_img, R, D], got shape {feats.shape}")
    try:
        text = caps_path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{caps_path} is not UTF-8 text ({err})") from err
    captions = [line.strip() for line in text.splitlines() if line.strip()]
    images: Sequence[Any] = feats
    if len(captions) == len(feats) and captions_per_image > 1:  # one image row per caption
        if len(feats) % captions_per_image or not np.array_equal(feats[0], feats[captions_per_image - 1]):
            raise DataError(f"{ims_path} has one row per caption, but its rows do not repeat each image "
                            f"data.captions_per_image={captions_per_image} times; fix data.captions_per_image")
        images = _EveryNth(feats, captions_per_image)
    if len(captions) != captions_per_image * len(images):
        raise DataError(
            f"{caps_path} has {len(captions)} captions for {len(images)} images; expected "
            f"data.captions_per_image={captions_per_image} per image"
        )
    return ItmSplit(images, captions, np.repeat(np.arange(len(images)), captions_per_image))


def validation_split(cfg: Any) -> str:
    """``data.val_split``, with ``auto`` resolved: ``dev`` for the features (SCAN) layout, ``val`` otherwise."""
    if cfg.data.val_split != "auto":
        return cfg.data.val_split
    return "dev" if cfg.data.name == "features" else "val"


def load_split(cfg: Any, split: str | Sequence[str]) -> ItmSplit:
    """One split (or, for ``karpathy``, the union of several) of ``cfg.data.name``."""
    data = cfg.data
    splits = [split] if isinstance(split, str) else list(split)
    if data.name == "karpathy":
        return load_karpathy(find_annotations(data.root, data.annotations), data.root, splits)
    if len(splits) != 1:
        raise DataError(f"data.name={data.name!r} reads one split at a time, got {splits}")
    if data.name == "features":
        return load_features(data.root, splits[0], data.captions_per_image)
    fewest_most = list(data.caption_attributes)
    if len(fewest_most) != 2 or not 0 <= fewest_most[0] <= fewest_most[1] <= len(ATTRIBUTES):
        raise DataError(f"data.caption_attributes must be [fewest, most] with 0 <= fewest <= most <= {len(ATTRIBUTES)}, "
                        f"got {fewest_most}")
    if data.caption_bins < 2:
        raise DataError(f"data.caption_bins must be >= 2 (3: terciles, the original demo), got {data.caption_bins}")
    return load_demo(splits[0], data.image_size, tuple(fewest_most), data.caption_bins)


def load_train_split(cfg: Any) -> ItmSplit:
    """The training split(s), cut to ``data.max_train_images`` when set."""
    splits = cfg.data.train_splits
    train = load_split(cfg, splits[0] if len(splits) == 1 else splits)
    return train.head(cfg.data.max_train_images) if cfg.data.max_train_images else train


def feature_shape(split: ItmSplit) -> tuple[int, ...]:
    """Shape of one precomputed image feature, ``(D,)`` or ``(R, D)``."""
    return tuple(np.shape(split.images[0]))


# ---------------------------------------------------------------------------- transforms


def features_to_tensor(feats: Any) -> Tensor:
    """A (possibly memory-mapped) feature array -> float32 tensor of the same shape."""
    return torch.from_numpy(np.array(feats, dtype=np.float32))


def image_transform(cfg: Any, train: bool) -> Callable[[Any], Tensor]:
    """PIL image -> ``[3, S, S]`` tensor (augmented when ``train``); features -> float tensor."""
    data = cfg.data
    if data.name == "features":
        return features_to_tensor
    if not train or data.train_augment == "none":
        return build_eval_transform(data.image_size, data.normalize)
    steps: list[Callable] = [T.RandomResizedCrop(data.image_size, scale=(0.5, 1.0))]
    if data.train_augment == "crop_flip":
        steps.append(T.RandomHorizontalFlip())
    steps.append(T.ToTensor())
    if data.normalize:
        steps.append(T.Normalize(IMAGENET_NORMALIZE["mean"], IMAGENET_NORMALIZE["std"]))
    return T.Compose(steps)


# ---------------------------------------------------------------------------- datasets


class PairDataset(Dataset):
    """One item per caption: ``(image tensor, token ids, image id)``.

    The augmentation of caption ``i`` in epoch ``e`` is seeded by the stream
    ``("views", e, i)`` of ``seed`` (:func:`~ifnd.runtime.seeding.derive_seed`): the same
    in every worker and after a resume. Call :meth:`set_epoch` before each epoch's loader.
    """

    def __init__(self, split: ItmSplit, transform: Callable[[Any], Tensor], vocab: Vocabulary, seed: int = 0):
        self.split, self.transform, self.seed = split, transform, seed
        self.tokens = [vocab.encode(c) for c in split.captions]
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, index: int) -> tuple[Tensor, list[int], int]:
        image_id = int(self.split.caption_image[index])
        seed = derive_seed(self.seed, "views", self.epoch, index)
        return seeded_call(seed, self.transform, self.split.images[image_id]), self.tokens[index], image_id


def collate_pairs(batch: Sequence[tuple[Tensor, list[int], int]]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """-> ``(images [B, ...], tokens [B, L] long, lengths [B] long, image ids [B] long)``."""
    images, tokens, ids = zip(*batch)
    padded, lengths = pad_tokens(tokens)
    return torch.stack(images), padded, lengths, torch.tensor(ids, dtype=torch.long)


class ImageDataset(Dataset):
    """Each image once: ``(image tensor, image index)``."""

    def __init__(self, split: ItmSplit, transform: Callable[[Any], Tensor]):
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return self.split.num_images

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.transform(self.split.images[index]), index


class CaptionDataset(Dataset):
    """Each caption once: ``(token ids, caption index)``."""

    def __init__(self, split: ItmSplit, vocab: Vocabulary):
        self.tokens = [vocab.encode(c) for c in split.captions]

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, index: int) -> tuple[list[int], int]:
        return self.tokens[index], index


def collate_captions(batch: Sequence[tuple[list[int], int]]) -> tuple[Tensor, Tensor, Tensor]:
    """-> ``(tokens [B, L] long, lengths [B] long, caption indices [B] long)``."""
    tokens, indices = zip(*batch)
    padded, lengths = pad_tokens(tokens)
    return padded, lengths, torch.tensor(indices, dtype=torch.long)
