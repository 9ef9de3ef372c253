"""The image-folder index: written once into the run folder, reused on the next start, no file opened."""

import numpy as np
import pytest
from PIL import Image

import ifnd.data.index as index_module
from ifnd.config import resolve
from ifnd.data.build import build_sources
from ifnd.data.index import FolderImages, index_path, scan_folder
from ifnd.data.sources import DataError


def _folder(root, per_class=3):
    for c, name in enumerate(("b", "a")):
        (root / name / "sub").mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (8, 8), (40 * c, 10 * i, 0)).save(root / name / ("sub" if i else "") / f"{i}.png")
    (root / "a" / "notes.txt").write_text("not an image")


def test_index_is_written_once_and_reused(tmp_path, monkeypatch):
    _folder(tmp_path / "train")
    (tmp_path / "train" / "a" / "corrupt.jpg").write_bytes(b"not a jpeg")  # found at load time, not now
    (tmp_path / "train" / "b" / "empty.png").write_bytes(b"")
    cfg = resolve({"output_dir": str(tmp_path / "run"), "data": {"name": "imagefolder", "root": str(tmp_path / "train")}})
    opened = []
    monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(a) or pytest.fail("opened a file at start"))
    train, _ = build_sources(cfg)
    path = index_path(str(tmp_path / "train"), cfg.output_dir)
    assert path.is_file() and path.parent == tmp_path / "run" / "index"
    assert isinstance(train, FolderImages) and len(train) == 7 and train.skipped == 1 and train.classes == ["a", "b"]
    assert train.samples[0][0] == tmp_path.resolve() / "train" / "a" / "0.png" and train.samples[0][1] == 0
    assert train.samples.paths.dtype.kind == "S" and train.labels.tolist() == [0] * 4 + [1] * 3
    written = path.stat().st_mtime_ns
    monkeypatch.setattr(index_module, "scan_folder", lambda root: pytest.fail("scanned again"))
    again, _ = build_sources(cfg)  # a resume: same run folder
    assert path.stat().st_mtime_ns == written and again.samples[6] == train.samples[6]
    assert not opened


def test_index_matches_the_checked_folder(tmp_path):
    _folder(tmp_path)
    index = scan_folder(str(tmp_path))
    assert index.classes == ("a", "b") and (index.sizes > 0).all()
    assert [p.decode() for p in index.paths] == ["a/0.png", "a/sub/1.png", "a/sub/2.png", "b/0.png", "b/sub/1.png",
                                                 "b/sub/2.png"]
    assert np.array_equal(index.labels, [0, 0, 0, 1, 1, 1])


def test_empty_files_refused_when_asked_and_flat_folders_name_the_tool(tmp_path):
    _folder(tmp_path / "train")
    (tmp_path / "train" / "a" / "empty.png").write_bytes(b"")
    with pytest.raises(DataError, match="1 empty image.*on_corrupt=skip"):
        FolderImages(scan_folder(str(tmp_path / "train")), on_corrupt="error")
    (tmp_path / "val").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "val" / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(DataError, match="tools/ilsvrc_val_layout.py"):
        scan_folder(str(tmp_path / "val"))
