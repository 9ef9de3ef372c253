"""What the engine guarantees on stop, crash, resume and bad input (docs/engine.md's table).

Tiny runs: 128 digits at 16 px, batch 32 (4 steps an epoch), one or two epochs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ifnd.cli import build_parser, main
from ifnd.config import ConfigError, resolve
from ifnd.eval.schema import EVAL_SCHEMA
from ifnd.itm.schema import ITM_SCHEMA
from ifnd.pretrain.task import PretrainTask
from ifnd.runtime.checkpoint import CheckpointError, check_compatible, load_checkpoint, save_checkpoint
from ifnd.runtime.loop import Engine, EvaluationFailed, Interrupted, TrainingDiverged
from ifnd.runtime.run import RunDir, claim_run_dir


def _checkpoints(cfg) -> Path:
    return Path(cfg.output_dir) / "checkpoints"


def _stopped_run(tiny_cfg, step: int = 2, **sections):
    """A one-epoch run stopped (as by SIGTERM) after ``step`` steps; returns its config."""
    cfg = tiny_cfg(train={"epochs": 1, **sections.pop("train", {})}, **sections)
    with pytest.raises(Interrupted):
        Engine(cfg, PretrainTask, stop_at=(0, step)).fit()
    return cfg


# ---------------------------------------------------------------- run directories
def test_a_new_run_into_a_directory_holding_a_run_is_refused_with_both_ways_on(tiny_cfg):
    cfg = _stopped_run(tiny_cfg, step=1)
    with pytest.raises(ConfigError) as refused:
        Engine(cfg, PretrainTask)
    message = str(refused.value)
    assert cfg.output_dir in message and "--resume auto" in message and "--set output_dir=DIR" in message
    assert "--overwrite" in message and "\n" not in message
    assert load_checkpoint(_checkpoints(cfg) / "last.pt")["step"] == 1  # untouched


def test_overwrite_deletes_the_old_run_before_starting(tmp_path):
    run = tmp_path / "run"
    for name in ("checkpoints/last.pt", "tensorboard/events.old", "metrics.json", "config.yaml"):
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text("old")
    claim_run_dir(run, resume=None, overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == []
    claim_run_dir(run, resume=None)  # now empty: a new run may start


def test_resuming_another_folder_s_checkpoint_into_a_run_directory_is_refused(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"run B")
    with pytest.raises(ConfigError, match="already holds a run"):
        claim_run_dir(tmp_path, resume=str(tmp_path.parent / "a" / "checkpoints" / "last.pt"))
    claim_run_dir(tmp_path, resume=str(tmp_path / "checkpoints" / "previous.pt"))  # its own checkpoint
    claim_run_dir(tmp_path, resume="auto")


def test_a_run_that_stopped_before_any_checkpoint_is_not_a_run_to_protect(tmp_path):
    (tmp_path / "config.yaml").write_text("seed: 0\n")
    claim_run_dir(tmp_path, resume=None)


@pytest.mark.parametrize("command", [
    ["pretrain"], ["itm-train"], ["linear", "--checkpoint", "x.pt"], ["semisup", "--checkpoint", "x.pt"],
])
def test_every_training_command_has_the_overwrite_flag(command):
    assert build_parser().parse_args([*command, "--overwrite"]).overwrite is True
    assert build_parser().parse_args(command).overwrite is False


def test_itm_train_into_a_run_directory_is_refused_on_the_command_line(tmp_path, capsys):
    (tmp_path / "metrics.json").write_text("{}")
    assert main(["itm-train", "--set", f"output_dir={tmp_path}", "--set", "device=cpu"]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_linear_into_an_evaluation_folder_holding_a_run_is_refused(checkpoint, tmp_path, capsys):
    (tmp_path / "metrics.json").write_text("{}")
    assert main(["linear", "--checkpoint", str(checkpoint), "--set", f"output_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume auto" in err


def test_an_output_dir_that_is_a_file_is_a_clear_error(tmp_path, tiny_cfg):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        claim_run_dir(path, resume=None)
    with pytest.raises(ConfigError, match="output_dir .* cannot be created"):
        RunDir(tiny_cfg(output_dir=str(path / "below")))


# ---------------------------------------------------------------- resume with another config
def test_resume_with_changed_result_keys_lists_every_difference_once(tiny_cfg):
    cfg = _stopped_run(tiny_cfg)
    changed = tiny_cfg(train={"epochs": 1, "batch_size": 16, "lr": 0.1}, detection={"mode": "oracle"})
    with pytest.raises(CheckpointError) as refused:
        Engine(changed, PretrainTask, resume="auto")
    message = str(refused.value)
    for expected in ("train.batch_size=32 (now 16)", "train.lr=0.3 (now 0.1)", "detection.mode='none' (now 'oracle')"):
        assert expected in message
    assert "--set train.batch_size=32" in message and "\n" not in message
    assert load_checkpoint(_checkpoints(cfg) / "last.pt")["config"]["train"]["batch_size"] == 32


def test_resume_may_change_the_documented_safe_keys(tiny_cfg):
    _stopped_run(tiny_cfg)
    safe = tiny_cfg(train={"epochs": 1, "log_every_steps": 3, "checkpoint_every_steps": 2},
                    data={"num_workers": 1}, knn={"every": 0, "k": 5})
    assert Engine(safe, PretrainTask, resume="auto").step == 2


def test_a_checkpoint_config_without_a_key_suggests_no_invalid_value(tiny_cfg):
    cfg = tiny_cfg()
    saved = cfg.to_dict()
    del saved["method"]  # e.g. written before the key existed
    check_compatible(saved, cfg)  # a missing key is not a difference
    saved["train"]["lr"] = 0.5
    with pytest.raises(CheckpointError) as refused:
        check_compatible(saved, cfg)
    assert "None" not in str(refused.value) and "--set train.lr=0.5" in str(refused.value)


def test_resume_on_data_of_another_size_is_a_one_line_error(tiny_cfg):
    cfg = _stopped_run(tiny_cfg)
    path = _checkpoints(cfg) / "last.pt"
    state = load_checkpoint(path)
    save_checkpoint({**state, "num_samples": 100}, path)  # as if data.root had held 100 images
    with pytest.raises(CheckpointError, match="trained on 100 samples but the data now hold 128"):
        Engine(cfg, PretrainTask, resume="auto")


# ---------------------------------------------------------------- checkpoints
def test_an_evaluation_error_keeps_the_epoch_and_resume_evaluates_it(tiny_cfg, monkeypatch):
    cfg = tiny_cfg(train={"epochs": 1})
    original = PretrainTask.knn_monitor

    def broken(self):
        raise RuntimeError("features of another dimension")

    monkeypatch.setattr(PretrainTask, "knn_monitor", broken)
    with pytest.raises(EvaluationFailed, match="after epoch 1 failed.*features of another dimension.*--resume auto"):
        Engine(cfg, PretrainTask).fit()
    saved = load_checkpoint(_checkpoints(cfg) / "last.pt")
    assert saved["epoch"] == 1 and saved["evaluated"] is False and len(saved["history"]) == 1
    monkeypatch.setattr(PretrainTask, "knn_monitor", original)
    metrics = Engine(cfg, PretrainTask, resume="auto").fit()
    assert metrics["epochs_done"] == 1 and len(metrics["history"]) == 1
    assert 0 <= metrics["history"][0]["knn_top1"] <= 100
    assert load_checkpoint(_checkpoints(cfg) / "last.pt")["evaluated"] is True


def test_an_unreadable_last_checkpoint_falls_back_to_the_previous_one(tiny_cfg, caplog):
    cfg = _stopped_run(tiny_cfg, step=3, train={"checkpoint_every_steps": 2})
    checkpoints = _checkpoints(cfg)
    assert load_checkpoint(checkpoints / "previous.pt")["step"] == 2  # the step-2 checkpoint, kept
    data = (checkpoints / "last.pt").read_bytes()
    (checkpoints / "last.pt").write_bytes(data[: len(data) // 2])  # torn
    with caplog.at_level(logging.WARNING):
        engine = Engine(cfg, PretrainTask, resume="auto")
    assert engine.step == 2
    assert "previous.pt" in caplog.text and "could not be read" in caplog.text


def test_nan_at_the_first_step_points_at_the_data_and_names_no_missing_checkpoint(tiny_cfg, monkeypatch):
    cfg = tiny_cfg()
    original = PretrainTask.step
    monkeypatch.setattr(PretrainTask, "step", lambda self, *args: original(self, *args) * float("nan"))
    with pytest.raises(TrainingDiverged) as diverged:
        Engine(cfg, PretrainTask).fit()
    message = str(diverged.value)
    assert "first step" in message and "input data" in message
    assert "no checkpoint has been written yet" in message and "last.pt" not in message


def test_nan_in_the_input_batch_is_named_as_such(tiny_cfg, monkeypatch):
    original = PretrainTask.loader

    def poisoned(self, sampler, epoch):
        for (x1, x2), labels, ids in original(self, sampler, epoch):
            x1[0, 0, 0, 0] = float("nan")
            yield (x1, x2), labels, ids

    monkeypatch.setattr(PretrainTask, "loader", poisoned)
    with pytest.raises(TrainingDiverged, match="input batch holds NaN"):
        Engine(tiny_cfg(), PretrainTask).fit()


# ---------------------------------------------------------------- metrics after a resume
def test_a_resumed_epoch_reports_the_loss_and_time_of_the_whole_epoch(tiny_cfg, tmp_path):
    straight = Engine(tiny_cfg(train={"epochs": 1}, output_dir=str(tmp_path / "straight")), PretrainTask).fit()
    cfg = _stopped_run(tiny_cfg)
    progress = load_checkpoint(_checkpoints(cfg) / "last.pt")["epoch_progress"]
    assert progress["steps"] == 2 and progress["time_s"] > 0
    resumed = Engine(cfg, PretrainTask, resume="auto").fit()
    assert resumed["history"][0]["loss"] == pytest.approx(straight["history"][0]["loss"], rel=1e-6)
    assert resumed["history"][0]["epoch_time_s"] > progress["time_s"]
    assert resumed["train_time_s"] == pytest.approx(resumed["history"][0]["epoch_time_s"])


# ---------------------------------------------------------------- validation at load
@pytest.mark.parametrize("override, message", [
    ("train.lr=-1", "'train.lr' must be greater than 0, got -1"),
    ("train.batch_size=0", "'train.batch_size' must be greater than 0, got 0"),
    ("train.batch_size=-4", "'train.batch_size' must be greater than 0, got -4"),
    ("train.epochs=0", "'train.epochs' must be greater than 0, got 0"),
])
def test_non_positive_lr_batch_size_and_epochs_are_refused_at_load_with_the_typed_value(override, message):
    with pytest.raises(ConfigError, match=message):
        resolve({}, [override])
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=key):
        resolve({}, [override], schema=ITM_SCHEMA)


@pytest.mark.parametrize("override", ["linear.lr=0", "linear.epochs=0", "semisup.batch_size=0", "semisup.lr_head=-1"])
def test_evaluation_keys_are_validated_too(override):
    with pytest.raises(ConfigError, match=f"'{override.split('=')[0]}' must be greater than 0"):
        resolve({}, [override], schema=EVAL_SCHEMA)


def test_malformed_set_value_is_one_line(tmp_path, capsys):
    assert main(["pretrain", "--set", "detection.num_clusters=[10,", "--set", f"output_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "detection.num_clusters=[10," in err and "not valid YAML" in err and len(err.splitlines()) == 1


def test_floats_in_exponent_notation_are_floats():
    assert resolve({}, ["train.lr=1e-3"]).train.lr == pytest.approx(1e-3)
    assert resolve({"train": {"weight_decay": "5E-4"}}).train.weight_decay == pytest.approx(5e-4)
    assert resolve({}, ["output_dir=1e3"]).output_dir == "1e3"  # a string key stays a string

