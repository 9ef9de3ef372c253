"""End-to-end pretraining on tiny data: run directory, resume equivalence, bad input."""

import json

import pytest
import torch

from ifnd.cli import main
from ifnd.config import ConfigError, resolve
from ifnd.runtime.checkpoint import CheckpointError, load_checkpoint
from ifnd.pretrain.task import PretrainTask
from ifnd.runtime.loop import Engine, Interrupted, TrainingDiverged


def _weights(run_dir):
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-6), key


@pytest.mark.parametrize("method", ["simclr", "moco"])
def test_run_directory_contents(tiny_cfg, method):
    cfg = tiny_cfg(method=method)
    metrics = Engine(cfg, PretrainTask).fit()
    run = tiny_cfg().output_dir
    from pathlib import Path

    run = Path(run)
    assert (run / "config.yaml").is_file()
    assert list((run / "tensorboard").iterdir())
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["epochs_done"] == 2 and 0 <= saved["knn_top1"] <= 100
    assert metrics["knn_top1"] == saved["knn_top1"]
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["epoch"] == 2 and state["config"]["method"] == method
    if method == "moco":
        assert (state["queue"]["ids"] >= 0).sum() == 64  # queue full, with dataset ids
        assert state["queue"]["ids"].max() < 128


@pytest.mark.parametrize("method", ["simclr", "moco"])
def test_ctrl_c_mid_epoch_then_resume_matches_uninterrupted(tiny_cfg, tmp_path, method):
    reference = tiny_cfg(method=method, output_dir=str(tmp_path / "ref"))
    Engine(reference, PretrainTask).fit()
    cfg = tiny_cfg(method=method, output_dir=str(tmp_path / "cut"))
    with pytest.raises(Interrupted):
        Engine(cfg, PretrainTask, stop_at=(1, 2)).fit()
    assert load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")["step"] == 2
    Engine(cfg, PretrainTask, resume="auto").fit()
    _assert_same(_weights(tmp_path / "ref"), _weights(tmp_path / "cut"))


def test_crash_without_save_resumes_from_last_epoch(tiny_cfg, tmp_path, monkeypatch):
    reference = tiny_cfg(method="moco", output_dir=str(tmp_path / "ref"))
    Engine(reference, PretrainTask).fit()
    cfg = tiny_cfg(method="moco", output_dir=str(tmp_path / "crash"))
    original = PretrainTask.step

    def crashing(self, batch, epoch, step):
        if (epoch, step) == (1, 1):
            raise RuntimeError("simulated power cut")
        return original(self, batch, epoch, step)

    monkeypatch.setattr(PretrainTask, "step", crashing)
    with pytest.raises(RuntimeError, match="power cut"):
        Engine(cfg, PretrainTask).fit()
    assert load_checkpoint(tmp_path / "crash" / "checkpoints" / "last.pt")["epoch"] == 1
    monkeypatch.setattr(PretrainTask, "step", original)
    Engine(cfg, PretrainTask, resume="auto").fit()
    _assert_same(_weights(tmp_path / "ref"), _weights(tmp_path / "crash"))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_cfg, monkeypatch):
    cfg = tiny_cfg()
    original = PretrainTask.step

    def poisoned(self, batch, epoch, step):
        loss = original(self, batch, epoch, step)
        return loss * float("nan") if epoch == 1 else loss

    monkeypatch.setattr(PretrainTask, "step", poisoned)
    with pytest.raises(TrainingDiverged, match="epoch 1 step 0.*last good checkpoint"):
        Engine(cfg, PretrainTask).fit()
    from pathlib import Path

    assert load_checkpoint(Path(cfg.output_dir) / "checkpoints" / "last.pt")["epoch"] == 1


def test_checkpoint_from_another_architecture_is_refused(tiny_cfg):
    cfg = tiny_cfg(train={"epochs": 1})
    Engine(cfg, PretrainTask).fit()
    other = resolve({**cfg.to_dict(), "model": {**cfg.to_dict()["model"], "backbone": "resnet18"}})
    with pytest.raises(CheckpointError, match="model.backbone='small_cnn'"):
        Engine(other, PretrainTask, resume="auto")


def test_batch_larger_than_data_is_refused(tiny_cfg):
    with pytest.raises(ConfigError, match="lower train.batch_size"):
        Engine(tiny_cfg(train={"batch_size": 256}), PretrainTask)


def test_cli_reports_config_errors(tmp_path, capsys):
    assert main(["pretrain", "--set", "train.epoch=1", "--set", f"output_dir={tmp_path}"]) == 2
    assert "did you mean 'train.epochs'" in capsys.readouterr().err.lower()


def test_moco_first_step_has_negatives(tiny_cfg, monkeypatch):
    from ifnd.pretrain.methods import moco as task_module

    losses = []
    original = task_module.moco_step

    def recording(*args, **kwargs):
        out = original(*args, **kwargs)
        losses.append(out.loss.item())
        return out

    monkeypatch.setattr(task_module, "moco_step", recording)
    Engine(tiny_cfg(method="moco", train={"epochs": 1}), PretrainTask).fit()
    assert losses[0] > 0  # an empty queue would give log(1) = 0
