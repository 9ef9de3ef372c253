"""The registries of detectors, objectives and methods: lookup, what each mode needs and keeps, its loss policy,
old checkpoints, each method's extra state."""

import pytest
import torch

from ifnd.config import ConfigError, resolve
from ifnd.falseneg.detectors import DETECTORS, build_detector
from ifnd.losses import LossMasks, info_nce, loss_masks
from ifnd.objectives import OBJECTIVES, build_objective
from ifnd.pretrain.methods import METHODS, build_method, build_model


def _cfg(**sections):
    return resolve({"train": {"epochs": 4}, "moco": {"queue_size": 8}, "model": {"proj_dim": 4}, **sections})


def test_each_mode_says_what_it_needs():
    labels = torch.arange(12) % 3
    needs = {mode: build_detector(_cfg(detection={"mode": mode, "num_clusters": [2, 3]}), 12, 4, labels)
             for mode in DETECTORS}
    assert {m: (d.needs_similarities, d.needs_pass_features, d.needs_bank, d.levels) for m, d in needs.items()} == {
        "none": (False, False, False, 1), "ifnd": (False, True, False, 2), "oracle": (False, False, False, 1),
        "noisy_oracle": (False, False, False, 1), "threshold": (True, False, False, 1), "fnc": (False, False, False, 1)}
    assert {m: d.support_views for m, d in needs.items() if d.support_views} == {"fnc": 2}
    bank = build_detector(_cfg(detection={"mode": "ifnd", "features": "bank", "num_clusters": [2]}), 12, 4, None)
    assert bank.needs_bank and not bank.needs_pass_features and bank.bank.shape == (12, 4)


def test_only_the_bank_mode_allocates_and_checkpoints_a_bank():
    pass_features = build_detector(_cfg(detection={"mode": "ifnd", "num_clusters": [2]}), 12, 4, None)
    bank = build_detector(_cfg(detection={"mode": "ifnd", "features": "bank", "num_clusters": [2]}), 12, 4, None)
    assert pass_features.bank is None and "bank" not in pass_features.state_dict()
    assert {"bank", "bank_filled", "labels"} <= set(bank.state_dict())
    with pytest.raises(RuntimeError, match="no embedding bank"):
        pass_features.observe(torch.arange(2), torch.zeros(2, 4))
    assert build_detector(_cfg(), 12, 4, None).state_dict() == {}


def test_old_checkpoint_states_load():
    """The single detector class saved every key (table, bank, thresholds) in every mode."""
    old = {"labels": torch.full((1, 12), -1), "confidence": torch.zeros(1, 12), "centroids": [], "last_round": 2,
           "share": 0.5, "bank": torch.zeros(12, 4), "bank_filled": torch.zeros(12, dtype=torch.bool),
           "thresholds": {"values": torch.full((12,), 0.3)}}
    for mode in ("ifnd", "oracle", "threshold", "none"):
        det = build_detector(_cfg(detection={"mode": mode, "num_clusters": [2]}), 12, 4, torch.arange(12) % 3)
        det.load_state_dict(old)
        assert det.active == (mode in ("ifnd", "oracle"))  # the tables are back; threshold: in its warm-up
    det = build_detector(_cfg(detection={"mode": "threshold"}), 12, 4, None)
    det.load_state_dict(old)
    assert torch.equal(det.thresholds.values, old["thresholds"]["values"])


def test_loss_policy_follows_detection_loss_and_combine():
    positive = torch.eye(3, 4, dtype=torch.bool)
    levels = torch.zeros(2, 3, 4, dtype=torch.bool)
    levels[0, 0, 2] = levels[1, 1, 3] = True
    det = build_detector(_cfg(detection={"loss": "attraction", "combine": "union"}), 12, 4, None)
    masks = det.loss_masks(positive, levels, None)
    expected = loss_masks(positive, levels.any(0), None, "attraction")
    assert masks.kept is None and torch.equal(masks.positives, expected.positives)
    assert masks.positives[0].tolist() == [1.0, 0.0, 1.0, 0.0]  # the detected pair became a positive


def test_a_mode_missing_from_the_registry_is_a_config_error(monkeypatch):
    from ifnd.falseneg import detectors

    monkeypatch.delitem(detectors.DETECTORS, "threshold")  # a mode in the config schema without its class
    with pytest.raises(ConfigError, match="detection.mode='threshold' is not a detector"):
        build_detector(_cfg(detection={"mode": "threshold"}), 12, 4, None)


def test_objective_registry_builds_every_objective_and_rejects_unknown_names_and_fne():
    assert build_objective(_cfg()) is info_nce
    assert set(OBJECTIVES) == {"infonce", "debiased", "hard_negatives", "decoupled", "decoupled_weighted"}
    logits, masks = torch.randn(3, 5), LossMasks(None, torch.eye(3, 5))
    for name in OBJECTIVES:
        assert build_objective(_cfg(objective={"name": name}))(logits, masks).isfinite()
    with pytest.raises(ConfigError, match="objective.name='nce'"):
        build_objective(_cfg(objective={"name": "nce"}))
    with pytest.raises(ConfigError, match="does not combine with negatives.sampler=fne"):
        build_objective(_cfg(method="moco", objective={"name": "debiased"}, negatives={"sampler": "fne"}))


def test_each_method_builds_its_model_and_keeps_its_own_state():
    assert set(METHODS) == {"simclr", "moco"}
    moco = build_method(_cfg(method="moco"), torch.device("cpu"))
    assert moco.queue.contents()[0].shape == (8, 4) and set(moco.state_dict()) == {"queue", "fne"}
    assert build_method(_cfg(), torch.device("cpu")).state_dict() == {}
    assert hasattr(build_model(_cfg(method="moco")), "backbone_momentum")
    assert not hasattr(build_model(_cfg()), "backbone_momentum")
    with pytest.raises(ConfigError, match="fne with method=moco"):
        build_method(_cfg(negatives={"sampler": "fne"}), torch.device("cpu"))
