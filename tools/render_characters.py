"""Render a many-class image folder of characters from the fonts installed on this machine.

Classes are characters; samples are fonts (the nuisance factor) with a little jitter (rotation,
scale, offset, ink and paper grey levels). Training and test images use disjoint fonts, so kNN on
the test split asks whether an encoder groups a character across fonts it never saw. It is the
held-out setting H2 of ``configs/studies/heldout_chars.yaml``::

    apt-get install fonts-dejavu-core fonts-dejavu-extra fonts-liberation fonts-freefont-ttf \\
        fonts-urw-base35 fonts-texgyre fonts-croscore fonts-crosextra-carlito \\
        fonts-crosextra-caladea fonts-lato fonts-open-sans
    python tools/render_characters.py --out data_cache/chars

The folder is ``OUT/train/<class>/<font>-<r>.png`` and ``OUT/test/...`` (an ``imagefolder`` data set),
plus ``OUT/manifest.json`` naming every font used and a digest of the images; the study records
the digest, so a run on another set of fonts is told apart. Fonts whose glyphs are blank, boxes or
identical across characters (symbol and dingbat fonts) are left out.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Upper-case letters and digits 2-9: 0/O and 1/I are drawn alike by many fonts and left out.
CHARACTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ23456789"
SKIP_FAMILIES = ("symbol", "dingbat", "d050000l", "math")
RENDER_SIZE = 96  # drawn large, then reduced: anti-aliased strokes at the output size


def installed_fonts() -> list[Path]:
    """TrueType / OpenType files that fontconfig lists, sorted (one order on every machine)."""
    out = subprocess.run(["fc-list", ":", "file"], capture_output=True, text=True, check=True).stdout
    files = {Path(line.split(":")[0].strip()) for line in out.splitlines() if line.strip()}
    return sorted(f for f in files if f.suffix.lower() in (".ttf", ".otf")
                  and not any(s in f.name.lower() for s in SKIP_FAMILIES))


def glyph(font: ImageFont.FreeTypeFont, char: str, size: int, rng: random.Random, jitter: bool) -> np.ndarray:
    """One character ``[size, size]`` uint8 (ink 255 on 0), centred by its bounding box, optionally jittered."""
    canvas = Image.new("L", (RENDER_SIZE * 2, RENDER_SIZE * 2), 0)
    ImageDraw.Draw(canvas).text((RENDER_SIZE // 2, RENDER_SIZE // 2), char, fill=255, font=font)
    box = canvas.getbbox()
    if box is None:
        return np.zeros((size, size), np.uint8)
    ink = canvas.crop(box)
    if jitter:
        ink = ink.rotate(rng.uniform(-10, 10), resample=Image.BILINEAR, expand=True)
    scale = (rng.uniform(0.65, 0.85) if jitter else 0.75) * size / max(ink.size)
    ink = ink.resize((max(1, round(ink.width * scale)), max(1, round(ink.height * scale))), Image.LANCZOS)
    out = Image.new("L", (size, size), 0)
    dx, dy = (rng.randint(-2, 2), rng.randint(-2, 2)) if jitter else (0, 0)
    out.paste(ink, ((size - ink.width) // 2 + dx, (size - ink.height) // 2 + dy))
    return np.asarray(out)


def usable(font_path: Path) -> bool:
    """Whether the font draws distinct, non-empty glyphs for the characters (not boxes or symbols)."""
    try:
        font = ImageFont.truetype(str(font_path), RENDER_SIZE)
    except OSError:
        return False
    rng = random.Random(0)
    shapes = [glyph(font, c, 32, rng, jitter=False) for c in "AB8"]
    if any(s.max() == 0 for s in shapes):
        return False
    return all(np.abs(a.astype(int) - b.astype(int)).sum() > 0 for i, a in enumerate(shapes) for b in shapes[i + 1:])


def render(out: Path, size: int, test_share: float, train_renders: int, test_renders: int, seed: int) -> dict:
    """Write the image folder; returns the manifest."""
    fonts = [f for f in installed_fonts() if usable(f)]
    if len(fonts) < 10:
        raise SystemExit(f"only {len(fonts)} usable fonts installed; install the Debian font packages named in "
                         "this tool's docstring")
    order = random.Random(seed).sample(fonts, len(fonts))
    n_test = max(1, round(test_share * len(fonts)))
    splits = {"test": sorted(order[:n_test]), "train": sorted(order[n_test:])}
    digest = hashlib.sha256()
    counts = {}
    for split, split_fonts in splits.items():
        renders = train_renders if split == "train" else test_renders
        counts[split] = 0
        for font_path in split_fonts:
            font = ImageFont.truetype(str(font_path), RENDER_SIZE)
            for char in CHARACTERS:
                folder = out / split / char
                folder.mkdir(parents=True, exist_ok=True)
                for r in range(renders):
                    rng = random.Random(f"{seed}/{split}/{font_path.name}/{char}/{r}")
                    ink = glyph(font, char, size, rng, jitter=True).astype(np.float32) / 255
                    paper, pen = rng.uniform(0, 80), rng.uniform(170, 255)
                    if rng.random() < 0.5:
                        paper, pen = 255 - paper, 255 - pen
                    pixels = np.clip(paper + (pen - paper) * ink, 0, 255).astype(np.uint8)
                    digest.update(pixels.tobytes())
                    Image.fromarray(pixels).save(folder / f"{font_path.stem}-{r}.png")
                    counts[split] += 1
    manifest = {"characters": CHARACTERS, "size": size, "seed": seed, "images": counts,
                "fonts": {k: [f.name for f in v] for k, v in splits.items()}, "sha256": digest.hexdigest()}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="data_cache/chars", help="output folder (replaced files keep their names)")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    parser.add_argument("--test-share", type=float, default=0.25, help="share of the fonts kept for the test split")
    parser.add_argument("--train-renders", type=int, default=1, help="jittered renders per font and character (train)")
    parser.add_argument("--test-renders", type=int, default=1, help="likewise for the test split")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    manifest = render(Path(args.out), args.size, args.test_share, args.train_renders, args.test_renders, args.seed)
    print(f"{len(CHARACTERS)} classes, {len(manifest['fonts']['train'])} training fonts, "
          f"{len(manifest['fonts']['test'])} test fonts: {manifest['images']['train']} training and "
          f"{manifest['images']['test']} test images in {args.out}; sha256 {manifest['sha256'][:16]}")


if __name__ == "__main__":
    main()
