"""tools/render_characters.py: glyphs, the font filter and a tiny rendered folder."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from PIL import Image, ImageFont


def test_glyph_is_centred_ink_of_the_asked_size(load_tool):
    tool = load_tool("render_characters")
    fonts = tool.installed_fonts()
    if not fonts:
        pytest.skip("no TrueType font installed (fonts-dejavu-core)")
    font = ImageFont.truetype(str(fonts[0]), tool.RENDER_SIZE)
    plain = tool.glyph(font, "H", 32, random.Random(0), jitter=False)
    assert plain.shape == (32, 32) and plain.dtype == np.uint8 and plain.max() == 255
    rows, cols = np.nonzero(plain)
    # centred: the ink's bounding box is symmetric to within a pixel, and fills 3/4 of the side at most
    assert abs((rows.min() + rows.max()) - 31) <= 2 and abs((cols.min() + cols.max()) - 31) <= 2
    assert max(np.ptp(rows), np.ptp(cols)) <= 0.75 * 32 + 1
    other = tool.glyph(font, "O", 32, random.Random(0), jitter=False)
    assert np.abs(plain.astype(int) - other).sum() > 0


def test_rendered_folder_has_disjoint_font_splits_and_a_stable_digest(tmp_path, load_tool, monkeypatch):
    tool = load_tool("render_characters")
    fonts = [f for f in tool.installed_fonts() if tool.usable(f)]
    if len(fonts) < 10:
        pytest.skip("fewer than 10 usable fonts installed")
    monkeypatch.setattr(tool, "CHARACTERS", "AB")
    monkeypatch.setattr(tool, "installed_fonts", lambda: fonts[:10])
    first = tool.render(tmp_path / "a", size=16, test_share=0.2, train_renders=1, test_renders=2, seed=3)
    again = tool.render(tmp_path / "b", size=16, test_share=0.2, train_renders=1, test_renders=2, seed=3)
    assert first["sha256"] == again["sha256"]
    assert not set(first["fonts"]["train"]) & set(first["fonts"]["test"])
    assert first["images"] == {"train": 8 * 2, "test": 2 * 2 * 2}
    files = sorted((tmp_path / "a" / "train" / "B").glob("*.png"))
    assert len(files) == 8 and Image.open(files[0]).size == (16, 16)
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["characters"] == "AB"
