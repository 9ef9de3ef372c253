"""Linear probe and kNN evaluation: the classifier loop on synthetic features, and the
`linear` / `knn` commands on a real (1-epoch) pretraining checkpoint."""

import json

import pytest
import torch
import torch.nn.functional as F

from ifnd.cli import main
from ifnd.config import resolve
from ifnd.eval.classifier import ClassifierSpec, ClassifierTask
from ifnd.eval.linear import FeatureBatches, FrozenEncoder, evaluate
from ifnd.eval.schema import EVAL_SCHEMA
from ifnd.models.backbones import build_backbone
from ifnd.runtime.checkpoint import load_checkpoint
from ifnd.runtime.loop import Engine, Interrupted


def run_cli(*argv: str) -> int:
    return main(list(argv))


def separable(n_per_class: int, classes: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised features ``[n*C, dim]`` around C orthogonal directions, labels ``[n*C]``."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    feats = torch.eye(dim)[labels] * 3 + 0.3 * torch.randn(len(labels), dim, generator=g)
    return F.normalize(feats, dim=1), labels


def _fit_separable(tmp_path, resume=None, stop_at=None):
    cfg = resolve({"device": "cpu", "output_dir": str(tmp_path / "probe"), "linear": {"epochs": 20}},
                  schema=EVAL_SCHEMA)  # lr 30, batch 256, cosine to 0
    train_x, train_y = separable(100, 5, 32, seed=0)
    test_x, test_y = separable(40, 5, 32, seed=1)

    def build(device):
        classifier = torch.nn.Linear(32, 5)
        return classifier, torch.optim.SGD(classifier.parameters(), lr=cfg.linear.lr, momentum=0.9)

    def test(model):
        return evaluate(model, FeatureBatches(test_x, test_y, 64), torch.device("cpu"))

    spec = ClassifierSpec("linear", build, (train_x, train_y), test)
    return Engine(cfg, lambda ctx, saved: ClassifierTask(ctx, spec), resume, stop_at,
                  resume_may_change=ClassifierTask.resume_may_change).fit()


def test_linear_probe_separates_separable_features(tmp_path):
    metrics = _fit_separable(tmp_path)
    history = metrics["history"]
    assert len(history) == 20 and history[-1]["lr"] == pytest.approx(0.0, abs=1e-9)  # cosine to 0
    assert history[-1]["loss"] < history[0]["loss"]
    assert metrics["top1"] == pytest.approx(100.0) and metrics["top5"] == pytest.approx(100.0)


def test_classifier_training_resumes_exactly_mid_epoch(tmp_path):
    straight = _fit_separable(tmp_path / "a")
    with pytest.raises(Interrupted):
        _fit_separable(tmp_path / "b", stop_at=(7, 1))
    resumed = _fit_separable(tmp_path / "b", resume="auto")
    assert resumed["epochs_done"] == straight["epochs_done"] == 20
    a, b = (load_checkpoint(tmp_path / d / "probe" / "checkpoints" / "last.pt")["model"] for d in ("a", "b"))
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_feature_batches_keep_the_order_and_cover_every_sample():
    x, y = torch.arange(10.0)[:, None], torch.arange(10)
    assert [b[1].tolist() for b in FeatureBatches(x, y, 4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_frozen_encoder_keeps_batchnorm_statistics():
    encoder = build_backbone("small_cnn")[0]
    frozen = FrozenEncoder(encoder).train()
    before = encoder.features[1].running_mean.clone()
    out = frozen(torch.randn(4, 3, 16, 16))
    assert torch.equal(encoder.features[1].running_mean, before) and not encoder.training
    assert out.shape == (4, 256) and torch.allclose(out.norm(dim=1), torch.ones(4)) and not out.requires_grad


def test_linear_command_writes_metrics_config_and_events(checkpoint, capsys):
    assert run_cli("linear", "--checkpoint", str(checkpoint), "--set", "linear.epochs=3") == 0
    out = checkpoint.parents[1] / "eval" / "linear"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["protocol"] == "linear" and metrics["checkpoint"] == str(checkpoint.resolve())
    assert 0 <= metrics["top1"] <= metrics["top5"] <= 100 and metrics["wall_time_s"] > 0
    assert len(metrics["history"]) == 3 and metrics["cache_features"] is True
    assert "image_size: 16" in (out / "config.yaml").read_text()  # data settings from the checkpoint
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert f"top-1 {metrics['top1']:.2f}%" in capsys.readouterr().out


def test_linear_without_cache_and_output_dir_override(checkpoint, tmp_path):
    out = tmp_path / "probe"
    assert run_cli("linear", "--checkpoint", str(checkpoint), "--set", "linear.cache_features=false",
                   "--set", "linear.epochs=1", "--set", "linear.lr=1.0", "--set", f"output_dir={out}") == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["cache_features"] is False and len(metrics["history"]) == 1


def test_knn_command(checkpoint, tmp_path):
    out = tmp_path / "knn"
    assert run_cli("knn", "--checkpoint", str(checkpoint), "--set", "knn.k=5", "--set", f"output_dir={out}") == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["protocol"] == "knn" and metrics["k"] == 5 and metrics["top1"] > 30  # 10 classes: chance is 10%


def test_bad_checkpoints_are_errors_with_exit_code_2(checkpoint, tmp_path, capsys):
    torch.save({"model": {"head.w": torch.zeros(1)}}, tmp_path / "headless.pt")
    assert run_cli("linear", "--checkpoint", str(tmp_path / "headless.pt")) == 2
    assert "error: " in capsys.readouterr().err
    torch.save(build_backbone("small_cnn")[0].state_dict(), tmp_path / "small_cnn.pth")
    assert run_cli("knn", "--checkpoint", str(tmp_path / "small_cnn.pth"), "--set", "model.backbone=resnet18") == 2
    assert "--set model.backbone=small_cnn" in capsys.readouterr().err
