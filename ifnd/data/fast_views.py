"""The training views of ``augment.device``: the CPU path, or the fast path's CPU side.

``augment.device=cpu`` is :class:`~ifnd.data.views.IndexedViews` (lightly's transforms in
the loader workers). ``cuda`` is the fast path: :class:`FastViews` does in the workers only
what needs the whole image,

* decode, at a reduced size where both crops allow it (JPEG's DCT scaling: the largest reduction
  that leaves each crop at least ``S`` pixels a side; simplejpeg for JPEG files, else PIL),
* the two random-resized crops, resized to ``uint8 [3, S, S]`` (torch's antialiased bilinear),
* every other random parameter of both views (:func:`~ifnd.data.device_augment.draw_params`),

and :class:`~ifnd.data.device_augment.DeviceAugment` does the rest batched on the training
device, after the batch is moved there (:meth:`TrainViews.to_device`). ``auto`` is ``cuda``
when training on CUDA and ``cpu`` otherwise. Both paths draw a sample's random numbers from
the stream ``("views", epoch, index)`` of the run's seed.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import simplejpeg
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset, default_collate

from ifnd.config import ConfigError
from ifnd.data.sources import ImageFileDataset, to_rgb
from ifnd.data.device_augment import DeviceAugment, ViewSpec, draw_params
from ifnd.data.views import IndexedViews, build_view_transform
from ifnd.runtime.seeding import derive_seed

RATIO = (3 / 4, 4 / 3)  # RandomResizedCrop's aspect ratios (lightly keeps torchvision's default)
DRAFT_REDUCTIONS = (8, 4, 2)  # JPEG decodes at 1/8, 1/4, 1/2 (or full) size
JPEG_COLORSPACES = ("YCbCr", "RGB", "Gray")  # what simplejpeg decodes to RGB as PIL does


def crop_box(rng: np.random.Generator, width: int, height: int, min_scale: float) -> tuple[int, int, int, int]:
    """``(left, top, w, h)`` of a random-resized crop: torchvision's ``RandomResizedCrop.get_params`` rule."""
    area = width * height
    log_ratio = (math.log(RATIO[0]), math.log(RATIO[1]))
    for _ in range(10):
        target = area * rng.uniform(min_scale, 1.0)
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
    in_ratio = width / height  # fallback: the central crop of the nearest allowed ratio
    w, h = width, height
    if in_ratio < RATIO[0]:
        h = round(w / RATIO[0])
    elif in_ratio > RATIO[1]:
        w = round(h * RATIO[1])
    return (width - w) // 2, (height - h) // 2, w, h


def draft_reduction(boxes: list[tuple[int, int, int, int]], size: int) -> int:
    """The largest JPEG reduction (8, 4, 2, else 1) that keeps every crop at least ``size`` a side."""
    smallest = min(min(w, h) for _, _, w, h in boxes)
    return next((r for r in DRAFT_REDUCTIONS if smallest / r >= size), 1)


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from the header of a JPEG that :func:`decode_jpeg` takes (YCbCr, RGB or grey), else None
    (not a JPEG, or CMYK / YCCK, which PIL converts as the CPU path does). simplejpeg reads the header without
    decoding: a tenth of PIL's ``Image.open`` (``tools/bench_loader.py``)."""
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    return (width, height) if colorspace in JPEG_COLORSPACES else None


def decode_jpeg(data: bytes, width: int, height: int, reduction: int) -> torch.Tensor | None:
    """``uint8 [1, 3, h, w]`` of a JPEG file's bytes, ``reduction`` times smaller (DCT scaling), or None where
    simplejpeg refuses them (a damaged file: PIL then decodes it or raises, under the corrupt-image rule).

    simplejpeg decodes with libjpeg-turbo straight into a numpy array: the same pixels as PIL's decoder at about
    70% of its CPU time on ImageNet-sized photos (``tools/bench_loader.py``). The array is ``[h, w, 3]``, so the
    tensor comes channels-last, as :func:`resized_crop` wants it.
    """
    try:
        pixels = simplejpeg.decode_jpeg(data, colorspace="RGB", min_factor=reduction,
                                        min_width=-(-width // reduction), min_height=-(-height // reduction))
    except ValueError:
        return None
    return torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0)


def decode_rgb(image: Image.Image, reduction: int, path: Path | str = "") -> torch.Tensor:
    """``uint8 [1, 3, h, w]`` of an image opened by PIL, ``reduction`` times smaller where it is a JPEG (PIL's
    ``draft``); other modes as :func:`~ifnd.data.sources.to_rgb` converts them (16-bit scaled, ``path`` named in
    its refusals). The path of what :func:`decode_jpeg` does not take, and of sources that hold images."""
    width, height = image.size
    if reduction > 1:
        image.draft("RGB", (width // reduction, height // reduction))  # PIL then scales by exactly 1 / reduction
    pixels = torch.from_numpy(np.array(image if image.mode == "RGB" else to_rgb(image, path)))  # [h, w, 3]
    return pixels.permute(2, 0, 1).unsqueeze(0)


def resized_crop(image: torch.Tensor, left: int, top: int, right: int, bottom: int, size: int) -> torch.Tensor:
    """``uint8 [3, size, size]``: the box of ``image [1, 3, h, w]`` resized bilinearly with antialiasing
    (as PIL's resize; torch's uint8 kernel is about twice as fast)."""
    crop = image[:, :, top:max(bottom, top + 1), left:max(right, left + 1)]
    crop = crop.contiguous(memory_format=torch.channels_last)  # torch's vectorised uint8 kernel wants it: 25% less
    return F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]


class FastViews(Dataset):
    """``source[i] -> ((uint8 [3,S,S], uint8 [3,S,S]), label, i, params float32 [2, NUM_PARAMS])``.

    With ``support_views`` > 0, that many more crops and parameter rows follow (a detector's support views),
    drawn from the stream ``("support", epoch, index)``; the training views' draws stay those of 0 support views
    (a JPEG is decoded at the reduction that every crop allows, support crops included).
    """

    def __init__(self, source: Dataset, spec: ViewSpec, seed: int = 0, support_views: int = 0):
        self.source, self.spec, self.seed, self.support_views = source, spec, seed, support_views
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Call before building the epoch's DataLoader iterator (workers copy the value)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[list[torch.Tensor], int, int, torch.Tensor]:
        rng = np.random.default_rng(derive_seed(self.seed, "views", self.epoch, index))
        support_rng = np.random.default_rng(derive_seed(self.seed, "support", self.epoch, index)) \
            if self.support_views else None
        draws = [rng] * 2 + [support_rng] * self.support_views  # the generator of each view
        if isinstance(self.source, ImageFileDataset):  # files: read here, so that a JPEG decodes reduced
            views, label = self.source.decoded(index, lambda path: self._file_views(path, draws))
        else:
            image, label = self.source[index]
            views = self._image_views(image, draws)
        params = draw_params(rng, self.spec, 2)
        if self.support_views:
            params = np.concatenate([params, draw_params(support_rng, self.spec, self.support_views)])
        return views, label, index, torch.from_numpy(params)

    def _file_views(self, path: Path, draws: list[np.random.Generator]) -> list[torch.Tensor]:
        """The views of an image file: a JPEG that simplejpeg takes is read once and never opened by PIL."""
        data = path.read_bytes()
        size, boxes = jpeg_size(data), None
        if size is not None:
            boxes = self._boxes(*size, draws)
            whole = decode_jpeg(data, *size, draft_reduction(boxes, self.spec.size))
            if whole is not None:
                return self._crops(whole, *size, boxes)
        with Image.open(io.BytesIO(data)) as image:  # PIL decodes it, or raises under the corrupt-image rule
            return self._image_views(image, draws, path, boxes)

    def _image_views(self, image: Image.Image, draws: list[np.random.Generator], path: Path | str = "",
                     boxes: list[tuple[int, int, int, int]] | None = None) -> list[torch.Tensor]:
        """The views of an image opened by PIL (decoded reduced where it is a JPEG and the crops allow), cut at
        ``boxes`` where they were drawn already, else at boxes drawn now."""
        boxes = boxes if boxes is not None else self._boxes(*image.size, draws)
        return self._crops(decode_rgb(image, draft_reduction(boxes, self.spec.size), path), *image.size, boxes)

    def _boxes(self, width: int, height: int, draws: list[np.random.Generator]) -> list[tuple[int, int, int, int]]:
        """One random-resized crop box per view, in the full image's pixels, from that view's generator."""
        return [crop_box(r, width, height, self.spec.min_scale) for r in draws]

    def _crops(self, whole: torch.Tensor, width: int, height: int,
               boxes: list[tuple[int, int, int, int]]) -> list[torch.Tensor]:
        """``boxes`` (of the ``width`` x ``height`` image) cut from ``whole [1, 3, h, w]``, the image decoded at
        full or reduced size, each resized to ``uint8 [3, S, S]``."""
        fx, fy = whole.shape[3] / width, whole.shape[2] / height
        return [resized_crop(whole, round(x * fx), round(y * fy), round((x + w) * fx), round((y + h) * fy),
                             self.spec.size) for x, y, w, h in boxes]

    @staticmethod
    def collate(samples: list[tuple[list[torch.Tensor], int, int, torch.Tensor]]) -> list[Any]:
        """A batch as torch's default collation makes it, the views ``uint8 [B, 3, S, S]`` stacked in the
        channels-last memory that the crops come in (stacking them as ``[B, 3, S, S]`` would transpose every
        pixel in the worker: 0.16 instead of 0.04 ms per image, a twentieth of the fast path's CPU side)."""
        as_hwc = [([v.permute(1, 2, 0) for v in views], *rest) for views, *rest in samples]
        views, *rest = default_collate(as_hwc)
        return [[v.permute(0, 3, 1, 2) for v in views], *rest]


@dataclass
class TrainViews:
    """The training set as views (``dataset``, with ``set_epoch``) and the step's move to the device.

    ``augment`` is None on the CPU path (the views are final), the device side on the fast path.
    """

    dataset: Dataset
    augment: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None

    def to_device(self, batch: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """A loader batch's two views ``[B, 3, S, S]`` on ``device``, augmented there on the fast path."""
        x1, x2 = (self._view(batch, v, device) for v in range(2))
        return x1, x2

    def support_to_device(self, batch: Any, device: torch.device) -> torch.Tensor | None:
        """A loader batch's support views ``[B, S, 3, S, S]`` on ``device`` (after the two training views), or
        None when the dataset makes none."""
        count = len(batch[0]) - 2
        return torch.stack([self._view(batch, 2 + v, device) for v in range(count)], 1) if count else None

    def _view(self, batch: Any, view: int, device: torch.device) -> torch.Tensor:
        """View ``view`` of a loader batch, ``[B, 3, S, S]`` on ``device`` (augmented there on the fast path)."""
        x = batch[0][view].to(device, non_blocking=True)
        if self.augment is None:
            return x
        return self.augment(x, batch[3][:, view].to(device, non_blocking=True))


def fast_path(augment_device: str, device: torch.device) -> bool:
    """Whether ``augment.device`` picks the fast path on a run training on ``device``."""
    return augment_device == "cuda" or (augment_device == "auto" and device.type == "cuda")


def build_train_views(cfg: Any, source: Dataset, device: torch.device, transform: type,
                      support_views: int = 0) -> TrainViews:
    """The views ``augment.device`` asks for (see the module docstring), with the strengths of the method's
    lightly ``transform`` class, and ``support_views`` more per image where a detector asks for them."""
    if fast_path(cfg.augment.device, device):
        spec = ViewSpec.from_config(cfg, transform)
        return TrainViews(FastViews(source, spec, cfg.seed, support_views), DeviceAugment(spec))
    if cfg.augment.solarize_prob > 0:
        raise ConfigError(f"augment.solarize_prob={cfg.augment.solarize_prob} needs the fast path: "
                          "set augment.device=cuda (or auto on a GPU), or augment.solarize_prob=0")
    return TrainViews(IndexedViews(source, build_view_transform(cfg, transform), cfg.seed, support_views), None)
