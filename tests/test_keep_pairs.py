"""detection.keep_pairs: the ablation that keeps only the false or only the true negatives a detector finds."""

import pytest
import torch

from ifnd.config import ConfigError, resolve
from ifnd.falseneg.detectors import SupportViews, build_detector
from ifnd.falseneg.masks import keep_detected_pairs
from ifnd.pretrain.task import PretrainTask
from ifnd.runtime.loop import Engine


def test_keep_detected_pairs_by_hand():
    classes = torch.tensor([0, 0, 1, 1])
    masks = torch.tensor([[[True, True, True, False], [True, False, True, True]]])  # [L=1, B=2, M=4]
    anchors, candidates = torch.tensor([0, 2]), torch.tensor([1, 3, 2, -1])  # the last slot is empty
    assert torch.equal(keep_detected_pairs(masks, anchors, candidates, classes, "all"), masks)
    fn = keep_detected_pairs(masks, anchors, candidates, classes, "false_negatives")
    tn = keep_detected_pairs(masks, anchors, candidates, classes, "true_negatives")
    assert fn[0].tolist() == [[True, False, False, False], [False, False, True, False]]
    assert tn[0].tolist() == [[False, True, True, False], [True, False, False, False]]  # empty slot: never
    with pytest.raises(ValueError, match="keep must be"):
        keep_detected_pairs(masks, anchors, candidates, classes, "some")


def fnc(keep: str, labels: torch.Tensor | None):
    cfg = resolve({"detection": {"mode": "fnc", "warmup_epochs": 0, "fnc_threshold": 0.5, "keep_pairs": keep}})
    return build_detector(cfg, 8, 2, labels)


def test_a_detector_hands_the_step_only_the_pairs_kept():
    # anchor image 0's views lie along x; candidates: images 5 and 6 along x (flagged), image 7 along y
    support = SupportViews(torch.tensor([[[1.0, 0.0], [1.0, 0.0]]]), torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
    anchors, candidates = torch.tensor([0]), torch.tensor([5, 6, 7])
    labels = torch.tensor([0, 1, 1, 1, 1, 0, 1, 0])  # 5 shares image 0's class, 6 does not
    detected = {keep: fnc(keep, labels).detect(anchors, candidates, support=support)[0, 0].tolist()
                for keep in ("all", "false_negatives", "true_negatives")}
    assert detected == {"all": [True, True, False], "false_negatives": [True, False, False],
                        "true_negatives": [False, True, False]}
    with pytest.raises(ConfigError, match="detection.keep_pairs=true_negatives.*true labels"):
        fnc("true_negatives", None)


def test_a_run_that_keeps_the_false_negatives_removes_pairs_at_precision_one(tiny_cfg):
    cfg = tiny_cfg(train={"epochs": 1}, detection={"mode": "fnc", "warmup_epochs": 0, "fnc_threshold": 0.0,
                                                    "keep_pairs": "false_negatives"})
    metrics = Engine(cfg, PretrainTask).fit()
    assert metrics["fn_precision"] == 1.0 and 0.0 < metrics["fn_recall"] < 1.0
