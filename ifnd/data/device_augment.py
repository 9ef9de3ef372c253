"""The fast view path's device side: batched augmentation with per-sample parameters.

The CPU side (:mod:`ifnd.data.fast_views`) decodes, takes the random-resized crops as
``uint8 [3, S, S]`` and draws every other random number of a view with :func:`draw_params`
from the sample's seeded stream. :class:`DeviceAugment` then applies them to a whole batch
on the training device (GPU, or CPU in the tests): horizontal flip, colour jitter
(brightness, contrast, saturation, hue, in a random order per sample, as torchvision's
``ColorJitter``), grayscale, Gaussian blur, solarize, normalise. It has no randomness of
its own, so the views depend only on the run's seed, the epoch and the sample: the
guarantees of the CPU path (independent of workers, identical after a mid-epoch resume).

The parameter ranges are those of the CPU path (:func:`ifnd.data.views.build_view_transform`):
:meth:`ViewSpec.from_config` reads the defaults of the method's lightly transform class.
The operations are kornia's (chosen by measurement: per-sample factors on a batch, where
torchvision.transforms.v2 takes one factor per call; ``tools/bench_loader.py --compare``).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any

import kornia.color
import kornia.enhance
import kornia.filters
import numpy as np
import torch
from lightly.transforms.utils import IMAGENET_NORMALIZE

# Columns of a view's parameter vector [P] (draw_params -> DeviceAugment).
FLIP, JITTER, BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3, 4, 5
ORDER = slice(6, 10)  # the 4 jitter operations' order: a permutation of 0..3 (brightness, contrast, saturation, hue)
GRAY, BLUR, SIGMA, SOLARIZE = 10, 11, 12, 13
NUM_PARAMS = 14


@dataclass(frozen=True)
class ViewSpec:
    """The distribution of one training view (probabilities and ranges)."""

    size: int
    min_scale: float
    hflip_prob: float
    cj_prob: float
    brightness: float  # factor ~ U[max(0, 1 - b), 1 + b], as ColorJitter
    contrast: float
    saturation: float
    hue: float  # shift ~ U[-h, h] of the hue circle (0.5 = half a turn)
    gray_prob: float
    blur_prob: float
    sigmas: tuple[float, float]
    solarize_prob: float
    normalize: bool

    @classmethod
    def from_config(cls, cfg: Any, transform: type) -> "ViewSpec":
        """``cfg.augment`` with the jitter and blur defaults of the method's lightly ``transform`` class
        (``SimCLRTransform``, ``MoCoV2Transform``)."""
        defaults = {name: p.default for name, p in inspect.signature(transform.__init__).parameters.items()}
        aug = cfg.augment
        strength = aug.cj_strength
        return cls(
            size=cfg.data.image_size, min_scale=aug.min_scale, hflip_prob=aug.hflip_prob, cj_prob=aug.cj_prob,
            brightness=strength * defaults["cj_bright"], contrast=strength * defaults["cj_contrast"],
            saturation=strength * defaults["cj_sat"], hue=strength * defaults["cj_hue"],
            gray_prob=aug.gray_prob, blur_prob=aug.blur_prob, sigmas=tuple(defaults["sigmas"]),
            solarize_prob=aug.solarize_prob, normalize=aug.normalize,
        )


def draw_params(rng: np.random.Generator, spec: ViewSpec, views: int) -> np.ndarray:
    """The random parameters of ``views`` views, ``float32 [views, NUM_PARAMS]``.

    One uniform draw ``u [views, NUM_PARAMS]`` is mapped column by column (coins, factors, hue, sigma), and
    the jitter order is the argsort of four of its columns: a sample pays one generator call and a few
    column operations (per-column draws and fancy indexing were a twentieth of the fast path's CPU side)."""
    u = rng.random((views, NUM_PARAMS))
    p = np.empty((views, NUM_PARAMS), dtype=np.float32)
    for column, prob in ((FLIP, spec.hflip_prob), (JITTER, spec.cj_prob), (GRAY, spec.gray_prob),
                         (BLUR, spec.blur_prob), (SOLARIZE, spec.solarize_prob)):
        p[:, column] = u[:, column] < prob
    for column, strength in ((BRIGHTNESS, spec.brightness), (CONTRAST, spec.contrast),
                             (SATURATION, spec.saturation)):  # U[max(0, 1 - s), 1 + s], as ColorJitter
        low = max(0.0, 1.0 - strength)
        p[:, column] = low + u[:, column] * (1.0 + strength - low)
    p[:, HUE] = spec.hue * (2 * u[:, HUE] - 1)
    p[:, ORDER] = u[:, ORDER].argsort(axis=1)  # a uniformly random permutation of 0..3
    p[:, SIGMA] = spec.sigmas[0] + u[:, SIGMA] * (spec.sigmas[1] - spec.sigmas[0])
    return p


def _brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return kornia.enhance.adjust_brightness_accumulative(x, f)


def _contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return kornia.enhance.adjust_contrast_with_mean_subtraction(x, f)


def _saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return kornia.enhance.adjust_saturation_with_gray_subtraction(x, f)


def _hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    return kornia.enhance.adjust_hue(x, shift * (2 * math.pi))  # a turn of the hue circle is 2 pi in kornia


_JITTER_OPS = ((_brightness, BRIGHTNESS), (_contrast, CONTRAST), (_saturation, SATURATION), (_hue, HUE))


def _apply(x: torch.Tensor, mask: torch.Tensor, op: Any, *args: torch.Tensor) -> torch.Tensor:
    """``op`` on the samples where ``mask [B]`` is true (arguments indexed alike); the others unchanged."""
    idx = mask.nonzero().squeeze(1)
    if idx.numel():
        x = x.index_copy(0, idx, op(x[idx], *(a[idx] for a in args)))
    return x


class DeviceAugment:
    """``(uint8 [B, 3, S, S], params [B, NUM_PARAMS]) -> float32 [B, 3, S, S]`` on the tensors' device."""

    def __init__(self, spec: ViewSpec):
        self.spec = spec
        self.kernel = 2 * math.ceil(3 * spec.sigmas[1]) + 1  # +-3 sigma of the largest blur
        self.mean = torch.tensor(IMAGENET_NORMALIZE["mean"]).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_NORMALIZE["std"]).view(1, 3, 1, 1)

    def __call__(self, images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.dim() != 4 or params.shape != (len(images), NUM_PARAMS):
            raise ValueError(f"expected uint8 [B, 3, S, S] and params [B, {NUM_PARAMS}], got "
                             f"{images.dtype} {tuple(images.shape)} and {tuple(params.shape)}")
        params = params.to(images.device, torch.float32)
        x = images.float().div_(255)
        x = torch.where(params[:, FLIP, None, None, None] > 0, x.flip(-1), x)
        jitter = params[:, JITTER] > 0
        order = params[:, ORDER].long()
        for position in range(4):
            for op_id, (op, column) in enumerate(_JITTER_OPS):
                x = _apply(x, jitter & (order[:, position] == op_id), op, params[:, column])
        x = _apply(x, params[:, GRAY] > 0, lambda v: kornia.color.rgb_to_grayscale(v).expand(-1, 3, -1, -1))
        x = _apply(x, params[:, BLUR] > 0, self._blur, params[:, SIGMA])
        x = _apply(x, params[:, SOLARIZE] > 0, kornia.enhance.solarize)
        if self.spec.normalize:
            x = (x - self.mean.to(x.device)) / self.std.to(x.device)
        return x

    def _blur(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return kornia.filters.gaussian_blur2d(x, self.kernel, torch.stack([sigma, sigma], 1))
