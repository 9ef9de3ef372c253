import numpy as np
import pytest
import torch
from PIL import Image
from lightly.transforms import SimCLRTransform

from ifnd.config import resolve
from ifnd.data.build import build_sources, train_loader
from ifnd.runtime.sampler import ResumableSampler
from ifnd.data.sources import (
    DataError,
    ImageFileDataset,
    load_digits_split,
    load_fashion_mnist,
)
from ifnd.data.views import IndexedViews, build_view_transform


def _write_images(root, classes=("a", "b"), per_class=3, size=12):
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            array = np.full((size, size, 3), 40 * c + 10 * i, dtype=np.uint8)
            Image.fromarray(array).save(root / name / f"{i}.png")


def test_digits_split_is_fixed_and_resized():
    train, test = load_digits_split(16)
    assert len(train) + len(test) == 1797
    image, label = train[0]
    assert image.size == (16, 16) and image.mode == "RGB" and 0 <= label < 10
    again, _ = load_digits_split(16)
    assert np.array_equal(train.labels, again.labels)


def test_image_folder_skips_empty_and_corrupt_files(tmp_path, caplog):
    _write_images(tmp_path)
    (tmp_path / "a" / "empty.png").write_bytes(b"")
    (tmp_path / "b" / "corrupt.jpg").write_bytes(b"not an image at all")
    ds = ImageFileDataset.from_folder(str(tmp_path), on_corrupt="skip")
    assert len(ds) == 6 and ds.skipped == 2
    assert "skipped 2" in caplog.text
    assert ds.classes == ["a", "b"] and sorted(set(ds.labels.tolist())) == [0, 1]
    with pytest.raises(DataError, match="on_corrupt=skip"):
        ImageFileDataset.from_folder(str(tmp_path), on_corrupt="error")


def test_missing_or_empty_folder_names_the_fix(tmp_path):
    with pytest.raises(DataError, match="does not exist.*data.root"):
        ImageFileDataset.from_folder(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        ImageFileDataset.from_folder(str(tmp_path / "empty"))


def test_file_list(tmp_path):
    _write_images(tmp_path / "imgs")
    listing = tmp_path / "train.txt"
    listing.write_text("a/0.png 0\nb/1.png 1\n\n")
    ds = ImageFileDataset.from_list(str(listing), base=str(tmp_path / "imgs"))
    assert len(ds) == 2 and ds[1][1] == 1
    listing.write_text("a/0.png\n")
    with pytest.raises(DataError, match="expected 'path label'"):
        ImageFileDataset.from_list(str(listing), base=str(tmp_path / "imgs"))


def test_imagefolder_through_the_config(tmp_path):
    _write_images(tmp_path / "train")
    cfg = resolve({"output_dir": str(tmp_path / "run"), "data": {"name": "imagefolder", "root": str(tmp_path / "train")}})
    train, test = build_sources(cfg)
    assert len(train) == 6 and test is None


def test_fashion_mnist_missing_is_a_clear_error(tmp_path, monkeypatch):
    import ifnd.data.sources as sources

    monkeypatch.setattr(sources, "FASHION_MNIST_DEBIAN", str(tmp_path / "none"))
    monkeypatch.setattr("torchvision.datasets.FashionMNIST.__init__",
                        lambda *a, **k: (_ for _ in ()).throw(RuntimeError("no network")))
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(str(tmp_path))


def test_fashion_mnist_reads_idx_files(tmp_path):
    import gzip

    def idx(path, array):
        header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
        with gzip.open(path, "wb") as f:
            f.write(header + array.tobytes())

    images = np.arange(4 * 28 * 28, dtype=np.uint32).astype(np.uint8).reshape(4, 28, 28)
    labels = np.array([0, 1, 2, 3], dtype=np.uint8)
    for split in ("train", "t10k"):
        idx(tmp_path / f"{split}-images-idx3-ubyte.gz", images)
        idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", labels)
    train, test = load_fashion_mnist(str(tmp_path))
    assert len(train) == 4 and train[2][1] == 2
    assert np.array_equal(np.asarray(train[1][0])[:, :, 0], images[1])


def _batches(dataset, sampler, workers):
    return [(torch.cat(v), ids) for v, _, ids in train_loader(dataset, sampler, workers, False)]


def test_views_are_reproducible_across_workers_and_resume(tiny_cfg):
    cfg = tiny_cfg()
    train, _ = build_sources(cfg)
    views = IndexedViews(train, build_view_transform(cfg, SimCLRTransform), seed=0)
    views.set_epoch(1)
    v1, label, index = views[5]
    assert index == 5 and len(v1) == 2 and v1[0].shape == (3, 16, 16)
    assert torch.equal(views[5][0][0], v1[0])  # same (seed, epoch, index) -> same view
    assert not torch.equal(v1[0], v1[1])       # the two views differ
    sampler = ResumableSampler(len(train), 32, seed=0)
    sampler.set_epoch(1)
    serial = _batches(views, sampler, 0)
    parallel = _batches(views, sampler, 2)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(serial, parallel))
    sampler.set_epoch(1, start_step=2)
    resumed = _batches(views, sampler, 0)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(serial[2:], resumed))
