"""Image encoders, momentum copies and loading a pretraining checkpoint's backbone."""

from __future__ import annotations

import pytest
import torch

from ifnd.config import resolve
from ifnd.itm.model import (
    Architecture,
    FeatureEncoder,
    build_itm_model,
    load_backbone_weights,
    read_pretrained_backbone,
)
from ifnd.itm.schema import ITM_SCHEMA
from ifnd.pretrain.methods import build_model
from ifnd.runtime.checkpoint import CheckpointError, save_checkpoint

SMALL = {"text": {"word_dim": 8, "hidden_dim": 8}, "model": {"embed_dim": 16, "feature_hidden_dim": 12}}


def _model(arch: Architecture):
    torch.manual_seed(0)
    return build_itm_model(resolve(SMALL, schema=ITM_SCHEMA), arch)


def test_image_and_text_embeddings_are_normalised_in_one_space():
    model = _model(Architecture(vocab_size=30, backbone="small_cnn"))
    images, text = model(torch.rand(4, 3, 16, 16), torch.randint(2, 30, (4, 6)), torch.tensor([6, 3, 2, 6]))
    assert images.shape == text.shape == (4, 16)
    torch.testing.assert_close(images.norm(dim=1), torch.ones(4))
    torch.testing.assert_close(text.norm(dim=1), torch.ones(4))


def test_feature_encoder_mean_pools_regions():
    encoder = FeatureEncoder(feature_dim=6, hidden_dim=5, embed_dim=4)
    regions = torch.rand(2, 3, 6)
    expected = torch.nn.functional.normalize(encoder.mlp(regions).mean(dim=1), dim=1)
    torch.testing.assert_close(encoder(regions), expected)
    assert encoder(torch.rand(2, 6)).shape == (2, 4)  # global features: one region
    model = _model(Architecture(vocab_size=10, feature_dim=6))
    assert model.image_encoder(regions).shape == (2, 16)


def test_momentum_copies_start_equal_take_no_gradient_and_follow_by_ema():
    model = _model(Architecture(vocab_size=10, backbone="small_cnn"))
    online, ema = model.text_encoder.proj.weight, model.text_encoder_momentum.proj.weight
    assert torch.equal(online, ema) and not ema.requires_grad
    before = ema.clone()
    with torch.no_grad():
        online.add_(1.0)
    model.momentum_update(0.9)
    torch.testing.assert_close(ema, 0.9 * before + 0.1 * online)
    imgs, txts = model.momentum_forward(torch.rand(2, 3, 16, 16), torch.randint(2, 10, (2, 3)), torch.tensor([3, 3]))
    assert not imgs.requires_grad and not txts.requires_grad


def test_backbone_of_a_pretraining_checkpoint_initialises_both_image_encoders(tmp_path, tiny_cfg):
    cfg = tiny_cfg(model={"backbone": "small_cnn"})
    pretrained = build_model(cfg)
    path = tmp_path / "pretrain.pt"
    save_checkpoint({"model": pretrained.state_dict(), "config": cfg.to_dict()}, path)
    name, cifar_stem, weights = read_pretrained_backbone(str(path))
    assert (name, cifar_stem) == ("small_cnn", True)
    model = _model(Architecture(vocab_size=10, backbone=name, cifar_stem=cifar_stem))
    load_backbone_weights(model, weights)
    for encoder in (model.image_encoder, model.image_encoder_momentum):
        for key, value in pretrained.backbone.state_dict().items():
            assert torch.equal(encoder.backbone.state_dict()[key], value)


def test_unusable_pretraining_checkpoints_are_refused(tmp_path, tiny_cfg):
    with pytest.raises(CheckpointError, match="not found"):
        read_pretrained_backbone(str(tmp_path / "missing.pt"))
    save_checkpoint({"weights": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an `ifnd pretrain`"):
        read_pretrained_backbone(str(tmp_path / "other.pt"))
    cfg = tiny_cfg(model={"backbone": "resnet18"})
    save_checkpoint({"model": build_model(cfg).state_dict(), "config": cfg.to_dict()}, tmp_path / "r18.pt")
    _, _, weights = read_pretrained_backbone(str(tmp_path / "r18.pt"))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_backbone_weights(_model(Architecture(vocab_size=10, backbone="small_cnn")), weights)


def test_image_autocast_keeps_float32_unit_embeddings_close_to_full_precision():
    cfg = resolve({"text": {"word_dim": 8, "hidden_dim": 8}, "model": {"embed_dim": 8}}, schema=ITM_SCHEMA)
    torch.manual_seed(0)
    model = build_itm_model(cfg, Architecture(vocab_size=12, backbone="small_cnn")).eval()
    batch = (torch.rand(4, 3, 16, 16), torch.randint(2, 12, (4, 5)), torch.full((4,), 5))
    full = model(*batch)[0]
    model.image_autocast = torch.bfloat16  # what itm-train sets on a GPU; bf16 autocast also runs on the CPU
    mixed, _ = model(*batch)
    momentum, _ = model.momentum_forward(*batch)
    for emb in (mixed, momentum):
        assert emb.dtype == torch.float32 and torch.allclose(emb.norm(dim=1), torch.ones(4), atol=1e-5)
    assert not torch.equal(mixed, full) and torch.allclose(mixed, full, atol=0.05)
