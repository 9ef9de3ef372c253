"""Pretraining with IFND / oracle detection on tiny data."""

import json
from pathlib import Path

import pytest
import torch

from ifnd.runtime.checkpoint import load_checkpoint
from ifnd.pretrain.task import PretrainTask
from ifnd.runtime.loop import Engine, Interrupted

DETECTION = {"mode": "ifnd", "num_clusters": [5, 10], "warmup_epochs": 1, "cluster_every": 1,
             "accept_start": 0.5, "accept_end": 1.0, "accept_schedule": "linear",
             "guard": False}  # the unguarded detector's mechanics; a guarded run: tests/test_guard.py


@pytest.mark.parametrize("method,features,loss,options", [
    ("simclr", "bank", "elimination", {}),
    ("moco", "pass", "attraction", {"combine": "average", "kmeans_backend": "torch"}),
    ("moco", "bank", "elimination", {"kmeans_backend": "torch", "hierarchical": True}),
    ("simclr", "pass", "elimination", {"embedding": "backbone", "combine": "union", "accept_per": "cluster",
                                       "confidence": "centroid"}),
])
def test_ifnd_run_detects_and_logs(tiny_cfg, method, features, loss, options):
    cfg = tiny_cfg(method=method, detection={**DETECTION, "features": features, "loss": loss, **options},
                   train={"epochs": 3})
    metrics = Engine(cfg, PretrainTask).fit()
    saved = json.loads((Path(cfg.output_dir) / "metrics.json").read_text())
    assert saved["accepted_share"] == pytest.approx(1.0)  # last round sits at the last epoch
    assert 0 <= saved["fn_precision"] <= 1 and 0 < saved["fn_recall"] <= 1
    rounds = [h for h in metrics["history"] if "round/accepted_share" in h]
    assert [h["epoch"] for h in rounds] == [1, 2]
    assert rounds[0]["round/accepted_share"] == pytest.approx(0.5)
    assert "round/level1/nmi" in rounds[0]
    assert "fn_precision" not in metrics["history"][0]  # warm-up epoch: no detection
    detecting = metrics["history"][1:]
    assert all(0 <= h["fn_level0_precision"] <= 1 and 0 <= h["fn_level1_recall"] <= 1 for h in detecting)
    assert all(h["fn_recall"] >= max(h["fn_level0_recall"], h["fn_level1_recall"]) - 1e-9 for h in detecting)  # union
    assert saved["fn_precision_mean"] == pytest.approx(sum(h["fn_precision"] for h in detecting) / 2)
    confusion = torch.tensor(saved["fn_confusion"])  # the last epoch's detected pairs by (anchor, candidate) class
    assert confusion.shape == (10, 10) and float(confusion.trace() / confusion.sum()) == pytest.approx(saved["fn_precision"])
    assert len(saved["fn_per_class"]["recall"]) == 10


def test_oracle_detection_is_exact(tiny_cfg):
    cfg = tiny_cfg(method="moco", detection={**DETECTION, "mode": "oracle", "accept_start": 1.0})
    metrics = Engine(cfg, PretrainTask).fit()
    assert metrics["fn_precision"] == pytest.approx(1.0)
    assert metrics["fn_recall"] == pytest.approx(1.0)


@pytest.mark.parametrize("mode, precision", [("oracle", 1.0), ("noisy_oracle", 0.6)])
def test_full_oracle_detects_from_the_first_epoch(tiny_cfg, mode, precision):
    detection = {**DETECTION, "mode": mode, "oracle": "full", "oracle_precision": precision, "oracle_recall": 0.8}
    metrics = Engine(tiny_cfg(method="simclr", detection=detection), PretrainTask).fit()
    first = metrics["history"][0]
    assert first["round/accepted_share"] == 1.0 and "fn_precision" in first  # epoch 0 already masks
    assert [h for h in metrics["history"][1:] if "round/accepted_share" in h] == []  # one round only
    if mode == "oracle":
        assert first["fn_precision"] == pytest.approx(1.0) and first["fn_recall"] == pytest.approx(1.0)
    else:  # 128 samples: loose bounds around the asked 0.6 / 0.8
        assert 0.4 < first["fn_precision"] < 0.8 and 0.6 < first["fn_recall"] < 0.95


def test_resume_between_rounds_keeps_labels_and_matches(tiny_cfg, tmp_path):
    detection = {**DETECTION, "cluster_every": 2, "warmup_epochs": 1}
    ref = tiny_cfg(method="moco", detection=detection, train={"epochs": 3}, output_dir=str(tmp_path / "ref"))
    Engine(ref, PretrainTask).fit()
    cfg = tiny_cfg(method="moco", detection=detection, train={"epochs": 3}, output_dir=str(tmp_path / "cut"))
    with pytest.raises(Interrupted):
        Engine(cfg, PretrainTask, stop_at=(2, 1)).fit()  # round at epoch 1; epoch 2 has none
    cut = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert cut["detector"]["last_round"] == 1 and (cut["detector"]["labels"] >= 0).any()
    engine = Engine(cfg, PretrainTask, resume="auto")
    assert not engine.task.detector.wants_round(2)
    engine.fit()
    a = load_checkpoint(tmp_path / "ref" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert torch.equal(a["detector"]["labels"], b["detector"]["labels"])
    for key in a["model"]:
        assert torch.allclose(a["model"][key].float(), b["model"][key].float(), atol=1e-6), key


def test_bank_resume_mid_epoch_is_exact_from_the_side_file(tiny_cfg, tmp_path):
    detection = {**DETECTION, "features": "bank"}  # rounds at epochs 1 and 2; the cut falls inside epoch 1
    runs = {name: tiny_cfg(method="simclr", detection=detection, train={"epochs": 3, "checkpoint_every_steps": 1},
                           output_dir=str(tmp_path / name)) for name in ("ref", "cut")}
    Engine(runs["ref"], PretrainTask).fit()
    with pytest.raises(Interrupted):
        Engine(runs["cut"], PretrainTask, stop_at=(1, 2)).fit()
    cut = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")
    share = cut["detector"]["bank_file"]
    assert "bank" not in cut["detector"] and len(share["ids"]) < 128  # only the rows since the side file
    Engine(runs["cut"], PretrainTask, resume="auto").fit()
    a, b = (load_checkpoint(tmp_path / name / "checkpoints" / "last.pt") for name in ("ref", "cut"))
    assert torch.equal(a["detector"]["labels"], b["detector"]["labels"])  # epoch 2's round saw the same bank
    for key in a["model"]:
        assert torch.allclose(a["model"][key].float(), b["model"][key].float(), atol=1e-6), key


@pytest.mark.parametrize("num_samples", [0, 8])
def test_moco_with_fne_negatives_trains_and_resumes_exactly(tiny_cfg, tmp_path, num_samples):
    negatives = {"sampler": "fne", "num_samples": num_samples, "warmup_epochs": 1, "min_positives": 4}
    ref = tiny_cfg(method="moco", negatives=negatives, output_dir=str(tmp_path / "ref"))
    Engine(ref, PretrainTask).fit()
    state = load_checkpoint(tmp_path / "ref" / "checkpoints" / "last.pt")
    assert state["fne"]["stats.count"].sum() > 0  # statistics were fed
    cfg = tiny_cfg(method="moco", negatives=negatives, output_dir=str(tmp_path / "cut"))
    with pytest.raises(Interrupted):
        Engine(cfg, PretrainTask, stop_at=(1, 2)).fit()
    Engine(cfg, PretrainTask, resume="auto").fit()
    b = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")
    for key in state["model"]:
        assert torch.allclose(state["model"][key].float(), b["model"][key].float(), atol=1e-6), key


def test_fne_weights_remove_known_positives_and_keep_scale():
    from ifnd.falseneg.bayes import FNESampler
    from ifnd.pretrain.steps import fne_log_weights

    sampler = FNESampler(warmup_epochs=0, cut_down=False)  # random similarities: no row cut down to nothing
    gen = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(3, 4, generator=gen), dim=1)
    queue = torch.nn.functional.normalize(torch.randn(6, 4, generator=gen), dim=1)
    queue_ids = torch.tensor([7, 1, 2, 3, 7, 5])
    log_w = fne_log_weights(sampler, q, q, queue, queue_ids, torch.tensor([7, 8, 9]), 0, None)
    assert log_w.shape == (3, 7) and (log_w[:, 0] == 0).all()
    assert torch.isinf(log_w[0, [1, 5]]).all()  # anchor 7's own older keys are never negatives
    kept = torch.isfinite(log_w[:, 1:])
    mean_w = torch.where(kept, log_w[:, 1:].exp(), 0.0).sum(1) / kept.sum(1)
    assert torch.allclose(mean_w, torch.ones(3))


@pytest.mark.parametrize("method", ["simclr", "moco"])
def test_threshold_detector_trains_detects_and_resumes_exactly(tiny_cfg, tmp_path, method):
    detection = {"mode": "threshold", "warmup_epochs": 1, "threshold_quantile": 0.1, "threshold_lr": 0.05}
    ref = tiny_cfg(method=method, detection=detection, output_dir=str(tmp_path / "ref"))
    metrics = Engine(ref, PretrainTask).fit()
    assert "fn_precision" not in metrics["history"][0] and 0 < metrics["history"][1]["fn_recall"] <= 1
    cfg = tiny_cfg(method=method, detection=detection, output_dir=str(tmp_path / "cut"))
    with pytest.raises(Interrupted):
        Engine(cfg, PretrainTask, stop_at=(1, 2)).fit()
    Engine(cfg, PretrainTask, resume="auto").fit()
    a, b = (load_checkpoint(tmp_path / d / "checkpoints" / "last.pt") for d in ("ref", "cut"))
    assert torch.equal(a["detector"]["thresholds"]["values"], b["detector"]["thresholds"]["values"])
    assert not a["detector"]["thresholds"]["values"].isnan().any()  # every sample has been an anchor
    for key in a["model"]:
        assert torch.allclose(a["model"][key].float(), b["model"][key].float(), atol=1e-6), key
