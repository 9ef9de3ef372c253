"""Encoder loading (ifnd checkpoints, torchvision state dicts) and the eval config."""

from pathlib import Path

import pytest
import torch

from ifnd.config import ConfigError, load_config, resolve
from ifnd.eval.checkpoints import (
    EncoderWeights,
    EvalError,
    build_encoder,
    default_output_dir,
    feature_dim_of,
    read_encoder_weights,
)
from ifnd.eval.schema import EVAL_SCHEMA, load_eval_config
from ifnd.models.backbones import build_backbone
from ifnd.pretrain.methods import build_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def ifnd_checkpoint(tmp_path):
    """An (untrained) ifnd checkpoint RUN/checkpoints/last.pt of a MoCo model on 16 px digits."""
    cfg = resolve({"method": "moco", "data": {"image_size": 16, "max_train_samples": 64},
                   "model": {"proj_hidden_dim": 32, "proj_dim": 16}, "knn": {"k": 7}})
    torch.manual_seed(0)
    model = build_model(cfg)
    path = tmp_path / "run" / "checkpoints" / "last.pt"
    path.parent.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "config": cfg.to_dict(), "epoch": 1}, path)
    return path, model


def test_ifnd_checkpoint_loads_the_online_backbone(ifnd_checkpoint):
    path, model = ifnd_checkpoint
    weights = read_encoder_weights(path)
    assert weights.saved_config["data"]["image_size"] == 16
    assert weights.state_dict.keys() == model.backbone.state_dict().keys()  # not the momentum copy, not the head
    encoder, dim = build_encoder(weights, "small_cnn", True)
    assert dim == 256
    x = torch.randn(2, 3, 16, 16)
    model.eval(), encoder.eval()
    assert torch.allclose(encoder(x), model.backbone(x))


def test_groupnorm_checkpoint_needs_the_matching_norm(tmp_path):
    cfg = resolve({"model": {"norm": "group", "proj_hidden_dim": 32, "proj_dim": 16}})
    torch.save({"model": build_model(cfg).state_dict(), "config": cfg.to_dict()}, tmp_path / "gn.pt")
    weights = read_encoder_weights(tmp_path / "gn.pt")
    assert load_eval_config(None, [], weights.saved_config).model.norm == "group"
    assert build_encoder(weights, "small_cnn", True, "group")[1] == 256
    with pytest.raises(EvalError, match="GroupNorm backbone: add --set model.norm=group"):
        build_encoder(weights, "small_cnn", True, "batch")


def test_torchvision_state_dict_loads_with_the_named_architecture(tmp_path):
    resnet = build_backbone("resnet18", cifar_stem=False)[0]
    state = {f"module.{k}": v for k, v in resnet.state_dict().items()}
    state["module.fc.weight"] = torch.zeros(1000, 512)  # the ImageNet classifier is dropped
    torch.save({"state_dict": state}, tmp_path / "resnet18.pth")
    weights = read_encoder_weights(tmp_path / "resnet18.pth")
    assert weights.saved_config is None and "fc.weight" not in weights.state_dict
    encoder, dim = build_encoder(weights, "resnet18", cifar_stem=False)
    assert dim == 512 and torch.equal(encoder.conv1.weight, resnet.conv1.weight)
    with pytest.raises(EvalError, match="model.cifar_stem=false"):
        build_encoder(weights, "resnet18", cifar_stem=True)


def test_feature_size_mismatch_names_the_backbone_that_fits(tmp_path):
    resnet50 = build_backbone("resnet50", cifar_stem=False)[0].state_dict()
    assert feature_dim_of(resnet50) == 2048
    with pytest.raises(EvalError, match=r"2048-d features.*resnet18.*512-d.*--set model.backbone=resnet50"):
        build_encoder(EncoderWeights(tmp_path / "r50.pth", resnet50, None), "resnet18", cifar_stem=False)


def test_checkpoint_without_backbone_and_missing_file(tmp_path):
    torch.save({"model": {"head.layers.0.weight": torch.zeros(2, 2)}, "config": {}}, tmp_path / "head.pt")
    with pytest.raises(EvalError, match="no backbone weights.*python -m ifnd pretrain"):
        read_encoder_weights(tmp_path / "head.pt")
    torch.save({"epoch": 3, "history": []}, tmp_path / "no_model.pt")
    with pytest.raises(EvalError, match="no backbone weights"):
        read_encoder_weights(tmp_path / "no_model.pt")
    with pytest.raises(EvalError, match="not found.*--checkpoint"):
        read_encoder_weights(tmp_path / "missing.pt")


def test_default_output_dir_is_next_to_the_run():
    assert default_output_dir("runs/a/checkpoints/last.pt", "linear") == Path("runs/a/eval/linear")
    assert default_output_dir("weights/resnet50.pth", "knn") == Path("weights/eval/knn")


def test_eval_config_inherits_data_and_model_from_the_checkpoint(ifnd_checkpoint, tmp_path):
    saved = read_encoder_weights(ifnd_checkpoint[0]).saved_config
    cfg = load_eval_config(None, [], saved)
    assert cfg.data.image_size == 16 and cfg.data.max_train_samples == 64 and cfg.knn.k == 7
    assert cfg.linear.lr == 30.0 and cfg.linear.epochs == 100 and cfg.linear.weight_decay == 0.0
    assert cfg.linear.cache_features is True and cfg.output_dir == ""
    cfg = load_eval_config(None, ["data.image_size=20", "semisup.fraction=0.1"], saved)
    assert cfg.data.image_size == 20 and cfg.semisup.fraction == 0.1
    config = tmp_path / "eval.yaml"
    config.write_text("data:\n  max_train_samples: 32\nlinear:\n  epochs: 5\n")
    cfg = load_eval_config(config, ["linear.epochs=6"], saved)
    assert (cfg.data.max_train_samples, cfg.data.image_size, cfg.linear.epochs) == (32, 16, 6)
    with pytest.raises(ConfigError, match="unknown config key 'train.epochs'"):
        load_eval_config(None, ["train.epochs=3"], saved)


def test_eval_schema_reuses_the_pretraining_entries_and_documents_every_key():
    from ifnd.config import SCHEMA

    assert EVAL_SCHEMA["data.name"] is SCHEMA["data.name"] and EVAL_SCHEMA["knn.k"] is SCHEMA["knn.k"]
    assert {"device", "seed", "output_dir", "knn.temperature", "model.backbone"} <= EVAL_SCHEMA.keys()
    for section in ("linear", "semisup"):
        assert any(k.startswith(section + ".") for k in EVAL_SCHEMA)
    assert all(option.doc for option in EVAL_SCHEMA.values())


@pytest.mark.parametrize("name", ["eval_linear.yaml", "eval_semisup.yaml"])
def test_shipped_eval_configs_load(name):
    cfg = load_config(ROOT / "configs" / name, schema=EVAL_SCHEMA)
    assert cfg.linear.lr == 30.0 and cfg.semisup.fraction == 0.01
