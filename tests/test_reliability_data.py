"""Bad input refused early and clearly: YAML files, study files, cluster counts, images, one-class data."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from ifnd.config import ConfigError, load_config, load_experiment, read_yaml
from ifnd.data.sources import DataError, ImageFileDataset, _is_readable_image
from ifnd.eval.report import load_run
from ifnd.study import run as study_run
from ifnd.study.spec import StudySpec

BASE = {
    "method": "simclr", "device": "cpu",
    "data": {"name": "digits", "image_size": 16, "num_workers": 0, "max_train_samples": 64},
    "model": {"backbone": "small_cnn", "proj_hidden_dim": 32, "proj_dim": 16},
    "train": {"epochs": 1, "batch_size": 32},
}


def _study(tmp_path, **extra) -> str:
    """A study file's text (three seeds, two variants), with top-level keys replaced by ``extra``."""
    values = {"output_dir": str(tmp_path / "out"), "seeds": [0, 1, 2], "baseline": "baseline", "base": BASE,
              "variants": {"baseline": ["detection.mode=none"], "oracle": ["detection.mode=oracle"]},
              "knn_k": [5], "linear": {"epochs": 2}, **extra}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


# ---------------------------------------------------------------- YAML files


def test_a_key_defined_twice_is_refused_in_every_yaml_file_we_read(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("train:\n  epochs: 3\n  lr: 0.1\n  epochs: 4\n")
    with pytest.raises(ConfigError, match=r"config file '.*config.yaml', line 4 column 3: duplicate key 'epochs'"):
        load_config(config)
    experiment = tmp_path / "experiment.yaml"
    experiment.write_text("base: {seed: 1}\nseeds: [0]\nseeds: [1]\n")
    with pytest.raises(ConfigError, match="experiment file .* line 3 .*duplicate key 'seeds'"):
        load_experiment(experiment, ["seeds"])
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("seed: 0\nseed: 1\n")
    (run / "metrics.json").write_text("{}")
    with pytest.raises(ConfigError, match="run config .* line 2 .*duplicate key 'seed'"):
        load_run(run)
    # a merge key's values may be overridden: not a duplicate
    merged = tmp_path / "merged.yaml"
    merged.write_text("defaults: &d {a: 1, b: 2}\nitem:\n  <<: *d\n  a: 3\n")
    assert read_yaml(merged)["item"] == {"a": 3, "b": 2}


def test_a_yaml_syntax_error_is_one_line_naming_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: 3\n  lr: [0.1\nseed: 1\n")
    for load in (load_config, StudySpec.load):
        with pytest.raises(ConfigError) as err:
            load(bad)
        assert "\n" not in str(err.value) and f"'{bad}', line 4 column 5: expected ','" in str(err.value)
    bad.write_bytes(b"seed: \xff\n")
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_config(bad)


# ---------------------------------------------------------------- study files


def test_duplicate_variant_names_are_refused(tmp_path):
    path = _study(tmp_path)
    path.write_text(path.read_text().replace("  oracle:", "  baseline:"))  # the second variant reuses the name
    with pytest.raises(ConfigError, match="study file .* duplicate key 'baseline'"):
        StudySpec.load(path)


def test_only_with_an_unknown_variant_is_refused_naming_the_variants(tmp_path):
    spec = StudySpec.load(_study(tmp_path))
    with pytest.raises(ConfigError, match=r"--only names \['baselin'\].*variants are baseline,oracle"):
        study_run.run_study(spec, only={"baselin"})
    assert not (tmp_path / "out").exists()  # refused before anything ran


def test_fewer_than_three_seeds_warns(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="ifnd.study.spec"):
        StudySpec.load(_study(tmp_path))
    assert "seed" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="ifnd.study.spec"):
        StudySpec.load(_study(tmp_path, seeds=[0]))
    assert "1 seed(s) [0]; a claim needs at least 3" in caplog.text


@pytest.mark.parametrize("key, value, message", [
    ("linear", {"epoch": 100}, "unknown config key 'linear.epoch'.*Did you mean 'linear.epochs'"),
    ("linear", {"lr": "fast"}, "linear.lr.*float"),
    ("linear", [100], "'linear' takes a mapping"),
    ("knn_k", [20, 0], "'knn_k' takes a non-empty list of distinct integers >= 1"),
    ("knn_k", [], "'knn_k'"),
    ("seeds", [0, "1"], "'seeds' takes"),
    ("compare", [["oracle"]], "compare"),
    ("baseline", ["baseline"], "baseline"),
    ("variants", {"baseline": "detection.mode=none"}, "variant 'baseline' must be a name .* list of key=value"),
    ("output_dir", 3, "'output_dir' takes a folder path"),
])
def test_study_level_keys_are_validated_at_load(tmp_path, key, value, message):
    with pytest.raises(ConfigError, match=message):
        StudySpec.load(_study(tmp_path, **{key: value}))


def test_the_stop_hint_of_a_study_is_the_study_command(tmp_path, monkeypatch, capsys):
    from ifnd import cli
    from ifnd.runtime.loop import Interrupted

    path = _study(tmp_path)

    def stopped(spec, only, seeds):
        assert only == {"oracle"} and seeds == {0}
        raise Interrupted

    monkeypatch.setattr(study_run, "run_study", stopped)
    assert cli.main(["study", "--config", str(path), "--only", "oracle", "--seeds", "0"]) == 130
    err = capsys.readouterr().err
    assert f"continue with the same command: python -m ifnd study --config {path} --only oracle --seeds 0" in err
    assert "--resume" not in err


def test_study_epoch_time_counts_the_time_before_a_stop():
    # a run stopped after 3 s of epoch 0 and resumed: the resumed epoch's record times only its last 1 s,
    # while the engine's train_time_s holds all of it
    metrics = {"train_time_s": 6.0, "epochs_done": 2,
               "history": [{"epoch": 0, "epoch_time_s": 1.0}, {"epoch": 1, "epoch_time_s": 2.0,
                                                                 "round/round_time_s": 0.5}]}
    figures = study_run.timing_figures(metrics)
    assert figures == {"epoch_time_s": 3.0, "round_time_s": 0.5}
    assert math.isnan(study_run.timing_figures({**metrics, "history": []})["round_time_s"])


# ---------------------------------------------------------------- cluster counts


@pytest.mark.parametrize("value", ["[10,0]", "[10, -3]", "[]", "[10, a]", "[10, 10]", "[true]", "[10, 2.5]"])
def test_bad_cluster_counts_fail_at_config_load_naming_key_and_value(value):
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"detection.num_clusters={value}"])
    assert "\n" not in str(err.value) and str(err.value).startswith("config key 'detection.num_clusters' must be")
    assert str(err.value).endswith(f"got {yaml.safe_load(value)!r}")


def test_more_clusters_than_samples_fail_before_training(tiny_cfg):
    from ifnd.pretrain.task import PretrainTask
    from ifnd.runtime.loop import Engine

    cfg = tiny_cfg(detection={"mode": "ifnd", "num_clusters": [10, 200], "warmup_epochs": 1})
    with pytest.raises(ConfigError, match=r"detection.num_clusters=\[10, 200\]: k=\[200\] exceed the 128 training"):
        Engine(cfg, PretrainTask)
    assert not (Path(cfg.output_dir) / "checkpoints" / "last.pt").exists()
    Engine(tiny_cfg(detection={"mode": "oracle", "num_clusters": [10, 200]}), PretrainTask).run.close()  # no k-means


# ---------------------------------------------------------------- images


def _image_folder(root, classes: tuple[str, ...] = ("a", "b"), per_class: int = 8, size: int = 16) -> None:
    """A folder per class of random-noise JPEGs."""
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.random.RandomState(10 * c + i).randint(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.jpg", quality=95)


def _truncate(path) -> None:
    """Cut a JPEG's last 100 bytes: the header survives, so the start-up scan (verify()) passes; decoding fails."""
    path.write_bytes(path.read_bytes()[:-100])
    assert _is_readable_image(path)


def test_an_undecodable_image_is_refused_naming_the_file(tmp_path):
    _image_folder(tmp_path)
    _truncate(tmp_path / "a" / "3.jpg")
    ds = ImageFileDataset.from_folder(str(tmp_path), on_corrupt="error")
    with pytest.raises(DataError, match=r"cannot decode image .*a/3.jpg \(image file is truncated.*on_corrupt=skip"):
        ds[3]


def test_an_undecodable_image_is_replaced_by_a_seeded_other_and_counted(tmp_path, caplog):
    _image_folder(tmp_path)
    _truncate(tmp_path / "a" / "3.jpg")
    with caplog.at_level(logging.WARNING, logger="ifnd.data.sources"):
        ds = ImageFileDataset.from_folder(str(tmp_path), on_corrupt="skip", seed=5)
        image, label = ds[3]
    assert f"cannot decode image {tmp_path / 'a' / '3.jpg'}" in caplog.text
    assert ds.undecodable.nonzero().flatten().tolist() == [3]
    again = ImageFileDataset.from_folder(str(tmp_path), on_corrupt="skip", seed=5)[3]  # a fresh process, a resume
    assert np.array_equal(np.asarray(image), np.asarray(again[0])) and label == again[1]
    replacement = next(i for i in range(len(ds)) if i != 3 and np.array_equal(np.asarray(ds[i][0]), np.asarray(image)))
    assert label == ds.labels[replacement]
    head = ds.first(3)  # max_train_samples: replacements stay inside the first samples
    assert len(head) == 3 and not head.undecodable.any()


def test_undecodable_images_reach_metrics_from_loader_workers(tmp_path, tiny_cfg):
    from ifnd.pretrain.task import pretrain

    _image_folder(tmp_path / "images")
    _truncate(tmp_path / "images" / "b" / "1.jpg")
    metrics = pretrain(tiny_cfg(data={"name": "imagefolder", "root": str(tmp_path / "images"), "num_workers": 2,
                                      "max_train_samples": 0}, train={"epochs": 1, "batch_size": 8}))
    assert metrics["undecodable_images"] == 1 and metrics["history"][0]["data/undecodable_images"] == 1


def test_16_bit_images_are_scaled_to_8_bits_and_float_images_refused(tmp_path):
    (tmp_path / "a").mkdir()
    ramp = np.linspace(0, 65535, 16 * 16).round().astype(np.uint16).reshape(16, 16)
    Image.fromarray(ramp).save(tmp_path / "a" / "ramp16.png")
    Image.fromarray(ramp.astype(np.int32)).save(tmp_path / "a" / "ramp32.tif")
    ds = ImageFileDataset.from_folder(str(tmp_path))
    for index, mode in enumerate(("I;16", "I")):
        assert Image.open(ds.samples[index][0]).mode == mode
        pixels = np.asarray(ds[index][0])
        assert pixels.shape == (16, 16, 3) and pixels.dtype == np.uint8
        assert np.abs(pixels[..., 0].astype(int) - ramp.astype(int) * 255 / 65535).max() <= 0.5
    Image.fromarray(ramp.astype(np.float32)).save(tmp_path / "a" / "ramp32.tif")
    with pytest.raises(DataError, match=r"ramp32.tif: mode F \(32-bit float pixels\)"):
        ds[1]
    Image.fromarray(np.full((4, 4), 70000, dtype=np.int32)).save(tmp_path / "a" / "ramp32.tif")
    with pytest.raises(DataError, match="ramp32.tif: mode I pixels span 70000..70000, outside 16 bits"):
        ds[1]


def test_the_undecodable_marks_survive_a_resume(tmp_path, tiny_cfg):
    from ifnd.pretrain.task import PretrainTask
    from ifnd.runtime.loop import Engine

    _image_folder(tmp_path / "images")
    cfg = tiny_cfg(data={"name": "imagefolder", "root": str(tmp_path / "images"), "max_train_samples": 0},
                   train={"batch_size": 8})
    engine = Engine(cfg, PretrainTask)
    engine.task.train_src.undecodable[3] = True  # as a loader worker marks it
    engine.save()
    engine.run.close()
    resumed = Engine(cfg, PretrainTask, resume="auto")
    assert resumed.task.train_src.undecodable.nonzero().flatten().tolist() == [3]
    resumed.run.close()


# ---------------------------------------------------------------- one-class data


def test_knn_on_one_class_or_without_a_test_split_says_why_it_is_not_scored():
    import torch

    from ifnd.metrics.knn import knn_unscored_reason

    assert knn_unscored_reason(torch.tensor([0, 1, 0]), True) is None
    assert "one class (label 2)" in knn_unscored_reason(torch.tensor([2, 2, 2]), True)
    assert "no test split" in knn_unscored_reason(torch.tensor([0, 1]), False)


def test_pretraining_on_one_class_records_why_knn_is_not_scored(tmp_path, caplog, capsys):
    import json

    from ifnd import cli

    _image_folder(tmp_path / "images", classes=("b",))
    run = tmp_path / "run"
    sets = ["data.name=imagefolder", f"data.root={tmp_path / 'images'}", f"data.test_root={tmp_path / 'images'}",
            "data.image_size=16", "data.num_workers=0", "model.proj_hidden_dim=32", "model.proj_dim=16",
            "train.epochs=1", "train.batch_size=4", "device=cpu", "knn.k=3", "knn.baselines=true", f"output_dir={run}"]
    with caplog.at_level(logging.WARNING, logger="ifnd.pretrain.task"):
        assert cli.main(["pretrain", *[f"--set={s}" for s in sets]]) == 0
    assert "the kNN monitor is not scored: the training data hold one class (label 0)" in caplog.text
    assert "kNN not scored: the training data hold one class" in capsys.readouterr().out
    metrics = json.loads((run / "metrics.json").read_text())
    assert math.isnan(metrics["knn_top1"]) and "one class" in metrics["knn_not_scored"]
