"""Semi-supervised evaluation: balanced subsets, split files, and the `semisup` command."""

import json

import numpy as np
import pytest
from PIL import Image
from torch.utils.data import Subset

from ifnd.cli import main
from ifnd.data.sources import ImageFileDataset
from ifnd.eval.checkpoints import EvalError
from ifnd.eval.semisup import (
    balanced_subset,
    format_split,
    parse_split,
    resolve_split,
    sample_ids,
)


def run_cli(*argv: str) -> int:
    return main(list(argv))


def test_balanced_subset_has_equal_class_counts_and_is_reproducible():
    labels = np.random.default_rng(0).integers(0, 4, size=1000)  # unbalanced, >= 200 per class
    subset = balanced_subset(labels, 0.1, seed=5, classes=4)
    assert np.bincount(labels[subset], minlength=4).tolist() == [25, 25, 25, 25]
    assert np.array_equal(subset, np.sort(subset)) and len(set(subset.tolist())) == 100
    assert np.array_equal(subset, balanced_subset(labels, 0.1, seed=5, classes=4))
    assert not np.array_equal(subset, balanced_subset(labels, 0.1, seed=6, classes=4))
    one_pct = balanced_subset(labels, 0.01, seed=5, classes=4)
    assert np.bincount(labels[one_pct], minlength=4).tolist() == [2, 2, 2, 2]


def test_fraction_that_leaves_a_class_unlabelled_is_an_error():
    labels = np.repeat(np.arange(10), 10)  # 100 images, 10 classes
    with pytest.raises(EvalError, match=r"--fraction 0.01 .* no labelled image.*--fraction 0.1 or more"):
        balanced_subset(labels, 0.01, seed=0, classes=10)
    with pytest.raises(EvalError, match=r"classes \[10, 11\] have no training image.*data.max_train_samples"):
        balanced_subset(labels, 0.5, seed=0, classes=12)
    with pytest.raises(EvalError, match=r"\(0, 1\]"):
        balanced_subset(labels, 1.5, seed=0, classes=10)


def test_split_file_round_trips():
    ids = ["n01440764/n01440764_10026.JPEG", "n01443537/a b.JPEG", "7"]
    assert parse_split(format_split(ids)) == ids
    assert parse_split("# labelled images\n\n  x.png \nx.png\ny.png\n") == ["x.png", "y.png"]


def test_split_names_resolve_by_relative_path_or_unique_file_name():
    ids = ["cat/1.png", "cat/2.png", "dog/1.png", "dog/3.png"]
    assert resolve_split(["dog/3.png", "cat/1.png"], ids).tolist() == [0, 3]
    assert resolve_split(["2.png", "3.png"], ids).tolist() == [1, 3]  # SimCLR lists: bare file names
    with pytest.raises(EvalError, match=r"names 3 image\(s\).*\['1.png', 'bird/9.png', 'x.png'\].*--split-file"):
        resolve_split(["1.png", "bird/9.png", "cat/2.png", "x.png"], ids)  # 1.png is ambiguous
    with pytest.raises(EvalError, match="names no image"):
        resolve_split([], ids)


def test_sample_ids_are_relative_paths_or_indices(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(2):
            Image.new("RGB", (4, 4), (i * 90, 0, 0)).save(tmp_path / name / f"{i}.png")
    folder = ImageFileDataset.from_folder(str(tmp_path))
    assert sample_ids(folder, str(tmp_path)) == ["a/0.png", "a/1.png", "b/0.png", "b/1.png"]
    assert sample_ids(Subset(folder, [0, 2]), str(tmp_path)) == ["a/0.png", "b/0.png"]
    assert sample_ids(Subset(list(range(5)), range(3))) == ["0", "1", "2"]


def test_semisup_command_writes_the_split_and_reuses_it(checkpoint):
    common = ("--checkpoint", str(checkpoint), "--set", "data.max_train_samples=0", "--set", "semisup.epochs=1")
    assert run_cli("semisup", *common, "--fraction", "0.1") == 0  # 1,437 digits -> 14 per class
    out = checkpoint.parents[1] / "eval" / "semisup_10pct"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["protocol"] == "semisup" and metrics["fraction"] == 0.1 and metrics["labelled"] == 140
    assert 0 <= metrics["top1"] <= metrics["top5"] <= 100 and len(metrics["history"]) == 1
    written = parse_split((out / "split.txt").read_text())
    assert len(written) == 140 and all(line.isdigit() for line in written)
    assert "semisup:" in (out / "config.yaml").read_text() and list((out / "tensorboard").iterdir())

    again = checkpoint.parents[1] / "again"
    assert run_cli("semisup", *common, "--split-file", str(out / "split.txt"), "--set", f"output_dir={again}") == 0
    assert parse_split((again / "split.txt").read_text()) == written
    assert json.loads((again / "metrics.json").read_text())["split_source"] == str(out / "split.txt")


def test_semisup_command_refuses_bad_splits_and_fractions(checkpoint, tmp_path, capsys):
    split = tmp_path / "split.txt"
    split.write_text("0\n5\n99999\n123456\n")
    assert run_cli("semisup", "--checkpoint", str(checkpoint), "--split-file", str(split),
                   "--set", f"output_dir={tmp_path / 'out'}") == 2
    assert "names 2 image(s)" in capsys.readouterr().err and "99999" in split.read_text()
    assert run_cli("semisup", "--checkpoint", str(checkpoint), "--fraction", "0.01",
                   "--set", f"output_dir={tmp_path / 'out'}") == 2  # 128 images: 1% is 0 per class
    assert "no labelled image" in capsys.readouterr().err
