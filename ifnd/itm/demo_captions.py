"""Generated captions for the built-in digits: the offline image-text demo set.

Each caption names the digit and some attributes measured on its image's pixels: how much
ink (stroke weight), slant, width, height (size), and where the digit sits (vertical and
horizontal position), each binned in equal-count bins (quantiles) of the training images.
Templates and synonyms vary the wording, so verbatim copies of a caption are rare, while a
caption still *fits* every image of its digit whose binned attributes agree with the ones it
names: those images are the semantic false negatives FNE is about. :func:`caption_matches`
gives, for every caption and image, whether they match (the extended annotation that R@K can
be scored with, as ECCV Caption does for COCO).

How many images a caption fits is the demo's false-negative density, set by two knobs
(``data.caption_attributes`` and ``data.caption_bins``): how many attributes a caption names
(drawn per caption between a minimum and a maximum; the original demo names 1 to 3) and how
finely each attribute is binned (3: terciles, the original). With more than 3 bins a phrase
also says its bin, ``"leaning left, grade 1 of 6"``: the distinguishing cue that lets a caption
single out a few images. On the 1,437 training images a caption fits about 144 images when it
names no attribute, 46 with the original 1 to 3 of 3 bins, and about 1.2 with all 6 of 6 bins.
"""

from __future__ import annotations

import numpy as np

CAPTIONS_PER_IMAGE = 5
ATTRIBUTES = ("ink", "slant", "width", "height", "row", "column")
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIGIT_FORMS = ("a {name}", "the digit {num}", "a handwritten {name}", "number {num}", "a written {num}",
               "the number {name}", "a {num}", "a hand-drawn {name}")
# Synonyms of each attribute's three bins (low, middle, high tercile), as phrases after the digit.
SYNONYMS: dict[str, tuple[tuple[str, ...], ...]] = {
    "ink": (("in thin strokes", "drawn faintly", "with light strokes"), ("in regular strokes", "with medium ink"),
            ("in bold strokes", "drawn thickly", "with heavy ink")),
    "slant": (("leaning left", "tilted to the left", "slanting left"), ("upright", "standing straight", "not slanted"),
              ("leaning right", "tilted to the right", "slanting right")),
    "width": (("narrow", "slim", "squeezed thin"), ("of ordinary width", "medium-wide"),
              ("wide", "broad", "stretched sideways")),
    "height": (("small", "short", "tiny"), ("of medium height", "mid-sized"), ("tall", "large", "big")),
    "row": (("near the top", "high up", "in the upper part"), ("at mid height", "vertically centred"),
            ("near the bottom", "low down", "in the lower part")),
    "column": (("toward the left", "on the left side", "left of centre"), ("horizontally centred", "in the middle"),
               ("toward the right", "on the right side", "right of centre")),
}
JOINERS = (", ", " and ", ", ", " ")
FRAMES = ("{subject}", "this is {subject}", "a picture of {subject}", "{subject} on a dark background",
          "an image showing {subject}", "here we see {subject}")


def digit_attributes(images: np.ndarray) -> dict[str, np.ndarray]:
    """Continuous attributes of grayscale images ``uint8 [N, H, W]``, each ``[N]`` float.

    ``ink``: mean intensity; ``slant``: horizontal shift per row going up (positive =
    leaning right), from the intensity-weighted second moments; ``width``: horizontal over
    vertical spread of the ink; ``height``: vertical spread; ``row`` / ``column``: the
    centre of the ink (from the top, from the left).
    """
    weights = images.astype(np.float64) / 255.0
    mass = weights.sum(axis=(1, 2)) + 1e-9
    ys, xs = np.mgrid[: images.shape[1], : images.shape[2]]

    def moment(fx: np.ndarray) -> np.ndarray:
        return (weights * fx).sum(axis=(1, 2)) / mass

    cx, cy = moment(xs), moment(ys)
    dx, dy = xs[None] - cx[:, None, None], ys[None] - cy[:, None, None]
    var_x, var_y, cov = moment(dx**2), moment(dy**2) + 1e-9, moment(dx * dy)
    return {"ink": weights.mean(axis=(1, 2)), "slant": -cov / var_y, "width": np.sqrt(var_x / var_y),
            "height": np.sqrt(var_y), "row": cy, "column": cx}


def attribute_edges(images: np.ndarray, bins: int = 3) -> dict[str, np.ndarray]:
    """Inner edges ``[bins - 1]`` of ``bins`` equal-count bins of each attribute over reference images
    (the training split); ``bins=3``: the terciles."""
    if bins < 2:
        raise ValueError(f"an attribute needs at least 2 bins, got {bins}")
    quantiles = [i / bins for i in range(1, bins)]
    return {name: np.quantile(values, quantiles) for name, values in digit_attributes(images).items()}


def image_facts(images: np.ndarray, labels: np.ndarray, edges: dict[str, np.ndarray]) -> np.ndarray:
    """``[N, 1 + A]`` int64: each image's digit and attribute bins."""
    bins = np.stack([np.digitize(values, edges[name]) for name, values in digit_attributes(images).items()], 1)
    return np.concatenate([labels[:, None].astype(np.int64), bins], axis=1)


def attribute_phrase(attribute: str, value: int, bins: int, rng: np.random.Generator) -> str:
    """Words for bin ``value`` (0-based) of ``bins`` of one attribute: a synonym of the tercile
    holding the bin's centre, and for more than 3 bins the bin itself, ``"slanting left, grade 2 of 6"``."""
    phrase = str(rng.choice(SYNONYMS[attribute][(6 * value + 3) // (2 * bins)]))
    return phrase if bins <= 3 else f"{phrase}, grade {value + 1} of {bins}"


def caption_digits(facts: np.ndarray, seed: int, attributes: tuple[int, int] = (1, 3),
                   bins: int = 3) -> tuple[list[str], np.ndarray, np.ndarray]:
    """5 captions per image, deterministic given ``seed``.

    Args:
        facts: ``[N, 1 + A]`` from :func:`image_facts`: each image's digit and attribute bins.
        seed: seed of the wording draws.
        attributes: ``(fewest, most)`` attributes a caption names, each count equally likely,
            ``0 <= fewest <= most <= A``; ``(1, 3)`` is the original demo.
        bins: the bins ``facts`` were made with (>= 2); above 3 the phrases name their bin.

    Returns:
        ``(captions [5N], caption_image [5N] int64, said [5N, 1 + A] int64)``, image by image;
        ``said[c] = (digit, bin of each attribute the caption names, -1 for the others)``, the
        input of :func:`caption_matches`.
    """
    fewest, most = attributes
    if not 0 <= fewest <= most <= len(ATTRIBUTES):
        raise ValueError(f"a caption names between 0 and {len(ATTRIBUTES)} attributes, fewest first; got {list(attributes)}")
    rng = np.random.default_rng(seed)
    captions, caption_image, said = [], [], []
    for index, (label, *values) in enumerate(facts.tolist()):
        for _ in range(CAPTIONS_PER_IMAGE):
            named = rng.choice(len(ATTRIBUTES), size=rng.integers(fewest, most + 1), replace=False)
            subject = str(rng.choice(DIGIT_FORMS)).format(name=DIGIT_NAMES[label], num=label)
            phrases = [attribute_phrase(ATTRIBUTES[a], values[a], bins, rng) for a in named]
            if phrases:
                subject = f"{subject} {str(rng.choice(JOINERS)).join(phrases).strip()}"
            captions.append(str(rng.choice(FRAMES)).format(subject=subject))
            caption_image.append(index)
            row = np.full(1 + len(ATTRIBUTES), -1, dtype=np.int64)
            row[0] = label
            row[1 + named] = np.asarray(values, dtype=np.int64)[named]
            said.append(row)
    return captions, np.array(caption_image, dtype=np.int64), np.stack(said)


def caption_matches(said: np.ndarray, facts: np.ndarray) -> np.ndarray:
    """``[N_cap, N_img]`` bool: the caption's digit is the image's and every attribute it names agrees.

    Args:
        said: ``[N_cap, 1 + A]`` from :func:`caption_digits`; facts: ``[N_img, 1 + A]`` from :func:`image_facts`.
    """
    agree = (said[:, None, :] == facts[None, :, :]) | (said[:, None, :] < 0)
    return agree.all(axis=2)
