"""Generated captions for the built-in digits: the offline image-text demo set.

Each image gets 5 captions from distinct templates with synonyms drawn at random
("a handwritten seven", "the digit 7 written by hand", "number seven", ...). Besides
the digit, some templates name attributes measured on the pixels, each binned in
terciles of the training images: stroke weight (ink), slant and width. Captions are
therefore partly image-specific (retrieval can be learnt beyond the class) while many
captions of different images are semantically equal: the false negatives FNE is about.
"""

from __future__ import annotations

import numpy as np

CAPTIONS_PER_IMAGE = 5
ATTRIBUTES = ("ink", "slant", "width")
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Synonyms of each attribute's three bins (low, middle, high tercile).
SYNONYMS: dict[str, tuple[tuple[str, ...], ...]] = {
    "ink": (("thin", "faint", "light"), ("regular", "medium"), ("bold", "thick", "heavy")),
    "slant": (("leaning left", "tilted to the left", "slanting left"), ("upright", "standing straight", "not slanted"),
              ("leaning right", "tilted to the right", "slanting right")),
    "width": (("narrow", "slim", "skinny"), ("ordinary", "medium-width"), ("wide", "broad", "round")),
}
TEMPLATES = (
    "a handwritten {name}",
    "the digit {num} written by hand",
    "number {name}",
    "a {ink} handwritten {name}",
    "the number {num} drawn with {ink} strokes",
    "a {name} {slant}",
    "a handwritten {num}, {slant}",
    "a {width} {ink} {name} {slant}",
    "a {width} digit {name}",
    "someone wrote a {width} {num} in {ink} strokes",
)


def digit_attributes(images: np.ndarray) -> dict[str, np.ndarray]:
    """Continuous attributes of grayscale images ``uint8 [N, H, W]``, each ``[N]`` float.

    ``ink``: mean intensity; ``slant``: horizontal shift per row going up (positive =
    leaning right), from the intensity-weighted second moments; ``width``: horizontal
    over vertical spread of the ink.
    """
    weights = images.astype(np.float64) / 255.0
    mass = weights.sum(axis=(1, 2)) + 1e-9
    ys, xs = np.mgrid[: images.shape[1], : images.shape[2]]

    def moment(fx: np.ndarray) -> np.ndarray:
        return (weights * fx).sum(axis=(1, 2)) / mass

    cx, cy = moment(xs), moment(ys)
    dx, dy = xs[None] - cx[:, None, None], ys[None] - cy[:, None, None]
    var_x, var_y, cov = moment(dx**2), moment(dy**2) + 1e-9, moment(dx * dy)
    return {"ink": weights.mean(axis=(1, 2)), "slant": -cov / var_y, "width": np.sqrt(var_x / var_y)}


def attribute_edges(images: np.ndarray) -> dict[str, np.ndarray]:
    """Tercile edges ``[2]`` of each attribute over reference images (the training split)."""
    return {name: np.quantile(values, [1 / 3, 2 / 3]) for name, values in digit_attributes(images).items()}


def caption_digits(
    images: np.ndarray, labels: np.ndarray, edges: dict[str, np.ndarray], seed: int
) -> tuple[list[str], np.ndarray]:
    """5 captions per image, deterministic given ``seed``.

    Args:
        images: ``uint8 [N, H, W]`` grayscale digits.
        labels: ``[N]`` digit of each image.
        edges: :func:`attribute_edges` of the training images.
        seed: seed of the template and synonym draws.

    Returns:
        ``(captions [5N], caption_image [5N] int64)``, image by image.
    """
    bins = {name: np.digitize(values, edges[name]) for name, values in digit_attributes(images).items()}
    rng = np.random.default_rng(seed)
    captions, caption_image = [], []
    for index, label in enumerate(labels):
        for template in rng.choice(len(TEMPLATES), size=CAPTIONS_PER_IMAGE, replace=False):
            words = {name: str(rng.choice(SYNONYMS[name][bins[name][index]])) for name in ATTRIBUTES}
            captions.append(TEMPLATES[template].format(name=DIGIT_NAMES[label], num=int(label), **words))
            caption_image.append(index)
    return captions, np.array(caption_image, dtype=np.int64)
