"""itm-train / itm-eval end to end on a tiny slice of the built-in demo set (1 epoch, seconds)."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
import yaml

from ifnd.config import ConfigError, load_config
from ifnd.metrics.retrieval import METRIC_KEYS
from ifnd.itm.commands import add_subcommands
from ifnd.itm.schema import ITM_SCHEMA
from ifnd.itm.train import ITMTask, itm_train
from ifnd.pretrain.methods import build_model
from ifnd.runtime.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ifnd.runtime.loop import Engine, Interrupted

TINY = [
    "device=cpu", "data.image_size=16", "data.max_train_images=40", "data.num_workers=0",
    "text.word_dim=8", "text.hidden_dim=8", "model.embed_dim=16", "negatives.memory_size=64",
    "negatives.min_positives=4", "train.epochs=1", "train.batch_size=32", "train.lr=0.001", "train.log_every_steps=1",
    "train.eval_batch_size=64",
    "negatives.sampler=fne",  # the demo config's default is infonce; these tests check FNE's state and figures
]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: tiny ops on a shared, busy 2-core machine are far slower with two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_subcommands(p.add_subparsers(dest="command", required=True))
    return p


def run(*argv: str) -> int:
    args = parser().parse_args(list(argv))
    return args.func(args)


def train_args(run_dir, *extra: str) -> list[str]:
    sets = [f"output_dir={run_dir}", *TINY, *extra]
    return ["itm-train", "--config", "configs/itm_demo.yaml", *[a for s in sets for a in ("--set", s)]]


def test_demo_config_loads_and_unknown_keys_are_refused(tmp_path):
    cfg = load_config("configs/itm_demo.yaml", schema=ITM_SCHEMA)
    assert cfg.data.name == "demo" and cfg.negatives.sampler == "infonce" and cfg.negatives.margin == 0.2
    with pytest.raises(ConfigError, match="negatives.tau"):
        load_config("configs/itm_demo.yaml", ["negatives.tua=1"], schema=ITM_SCHEMA)
    with pytest.raises(ConfigError, match="one of"):
        load_config("configs/itm_demo.yaml", ["negatives.sampler=nope"], schema=ITM_SCHEMA)


def test_train_one_epoch_writes_run_files_and_eval_reads_the_checkpoint(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert run(*train_args(run_dir)) == 0
    for name in ("config.yaml", "metrics.json", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tensorboard").iterdir())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    record = metrics["history"][0]
    assert metrics["epochs_done"] == 1 and record["loss"] > 0 and set(METRIC_KEYS) <= set(metrics["val"])
    assert 0 <= record["same_class_negatives_pct"] <= 100 and "fne/pos_mean" in record
    density = metrics["data_density"]  # measured at load: images a caption fits, share of candidates fitting
    assert set(density) == {"train", "val"} and 1 <= density["train"]["images_per_caption"] <= 40
    assert 0 < density["val"]["fn_share_t2i"] < 1
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["negatives"]["sampler"] == "fne"
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert state["vocab"][:2] == ["<pad>", "<unk>"] and state["architecture"]["backbone"] == "small_cnn"
    assert "memory.ids" in state["mining"] and "sampler.stats.count" in state["mining"]

    capsys.readouterr()
    assert run("itm-eval", "--checkpoint", str(run_dir / "checkpoints" / "best.pt"), "--split", "val", "--folds", "2") == 0
    printed = capsys.readouterr().out
    assert "| val, 2-fold mean |" in printed and "| val, full set |" in printed
    written = json.loads((run_dir / "eval" / "val" / "metrics.json").read_text())
    assert set(METRIC_KEYS) <= set(written) and written["folds"] == 2 and len(written["per_fold"]) == 2
    assert written["full"]["rsum"] == pytest.approx(metrics["val"]["rsum"])  # same weights, same split


def test_resume_auto_continues_exactly_like_an_uninterrupted_run(tmp_path):
    straight = tmp_path / "straight"
    assert run(*train_args(straight, "train.epochs=2", "data.val_split=", "negatives.sampler=hardest")) == 0
    resumed = tmp_path / "resumed"
    assert run(*train_args(resumed, "data.val_split=", "negatives.sampler=hardest")) == 0
    assert run(*train_args(resumed, "train.epochs=2", "data.val_split=", "negatives.sampler=hardest"), "--resume", "auto") == 0
    a, b = (json.loads((d / "metrics.json").read_text())["history"] for d in (straight, resumed))
    assert len(a) == len(b) == 2 and a[1]["loss"] == pytest.approx(b[1]["loss"], rel=1e-5)
    with pytest.raises(CheckpointError, match="negatives.sampler"):
        run(*train_args(resumed, "train.epochs=3", "data.val_split="), "--resume", "auto")


@pytest.mark.parametrize("sampler", ["fne", "hardest", "infonce"])
def test_stop_mid_epoch_then_resume_matches_uninterrupted(tmp_path, sampler):
    """Stopped at epoch 1 step 1 (after FNE's warm-up epoch, with the memory in use) and resumed = never stopped."""
    sets = [*TINY, "train.epochs=2", "data.max_train_images=60", "train.batch_size=16", f"negatives.sampler={sampler}",
            "data.val_split="]
    straight = load_config("configs/itm_demo.yaml", [*sets, f"output_dir={tmp_path / 'straight'}"], schema=ITM_SCHEMA)
    sampling = itm_train(straight)["history"][1]  # after FNE's warm-up epoch
    if sampler == "fne":
        assert sampling["fne/calls"] > 0 and 0 <= sampling["fne/ready_share"] <= 1
        assert 0 <= sampling["fne/above_switch_share"] <= 1 and sampling["fne/weight_true_neg"] >= 0
    cut = load_config("configs/itm_demo.yaml", [*sets, f"output_dir={tmp_path / 'cut'}"], schema=ITM_SCHEMA)
    with pytest.raises(Interrupted):
        itm_train(cut, stop_at=(1, 1))
    assert load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")["step"] == 1
    itm_train(cut, resume="auto")
    a, b = (load_checkpoint(tmp_path / d / "checkpoints" / "last.pt") for d in ("straight", "cut"))
    for key in a["model"]:
        assert torch.allclose(a["model"][key].float(), b["model"][key].float(), atol=1e-6), key
    if sampler != "infonce":  # in-batch: no memory
        assert torch.equal(a["mining"]["memory.ids"], b["mining"]["memory.ids"])


def test_image_checkpoint_initialises_the_image_backbone(tmp_path, tiny_cfg):
    pre_cfg = tiny_cfg(model={"backbone": "small_cnn"})
    torch.manual_seed(123)
    pretrained = build_model(pre_cfg)
    path = tmp_path / "pretrain.pt"
    save_checkpoint({"model": pretrained.state_dict(), "config": pre_cfg.to_dict()}, path)
    cfg = load_config("configs/itm_demo.yaml", [f"output_dir={tmp_path / 'run'}", *TINY,
                                                f"model.image_checkpoint={path}", "model.backbone=resnet18"],
                      schema=ITM_SCHEMA)
    trainer = Engine(cfg, ITMTask).task
    assert trainer.arch.backbone == "small_cnn" and trainer.arch.cifar_stem  # taken from the checkpoint
    expected = pretrained.backbone.state_dict()
    for key, value in trainer.model.image_encoder.backbone.state_dict().items():
        assert torch.equal(value, expected[key])
