"""tools/leaderboard.py: shares of the oracle gap across two tiny study files with hand-written results."""

from __future__ import annotations

import json
import math
import sys

import pytest
import yaml

BASE = {"method": "simclr", "device": "cpu", "data": {"name": "digits", "image_size": 16, "max_train_samples": 64},
        "model": {"backbone": "small_cnn"}, "train": {"epochs": 1, "batch_size": 32}}


def _setting(tmp_path, name: str, default_name: str, gains: dict[str, float]):
    path = tmp_path / f"{name}.yaml"
    variants = {"baseline": ["detection.mode=none"], "oracle-full": ["detection.mode=oracle", "detection.oracle=full"],
                default_name: ["detection.mode=ifnd", "detection.num_clusters=[4]"],
                "threshold": ["detection.mode=threshold"],
                "guarded-labels": ["detection.mode=ifnd", "detection.num_clusters=[4]", "detection.guard=true",
                                   "detection.guard_labelled_share=0.5"],
                "fnc-true-negatives": ["detection.mode=fnc", "detection.keep_pairs=true_negatives"]}
    path.write_text(yaml.safe_dump({"output_dir": str(tmp_path / name), "seeds": [0, 1, 2], "base": BASE,
                                    "variants": variants, "knn_k": [5]}))
    for variant in variants:
        for seed in (0, 1, 2):
            run = tmp_path / name / "runs" / variant / f"seed{seed}"
            run.mkdir(parents=True)
            row = {"variant": variant, "seed": seed, "status": "done", "knn5_top1": 50.0 + seed + gains.get(variant, 0)}
            (run / "study.json").write_text(json.dumps(row))
    return str(path)


def test_mean_share_over_settings_names_the_best_method(tmp_path, monkeypatch, capsys, load_tool):
    tool = load_tool("leaderboard")
    first = _setting(tmp_path, "a", "ifnd-union-all-early", {"oracle-full": 2.0, "ifnd-union-all-early": 1.0,
                                                             "threshold": 1.5, "guarded-labels": 2.0,
                                                             "fnc-true-negatives": 2.0})
    second = _setting(tmp_path, "b", "default", {"oracle-full": 4.0, "default": 3.0, "threshold": -1.0,
                                                 "guarded-labels": 4.0, "fnc-true-negatives": 4.0})
    monkeypatch.setattr(sys, "argv", ["leaderboard", first, second, "--alias", "ifnd-union-all-early=default"])
    tool.main()
    out = capsys.readouterr().out.splitlines()
    # default: 50% and 75% -> 62%; threshold: 75% and -25% -> 25%; the oracle is a bound, not ranked, and the
    # guard that reads labels (100%) is marked and not the label-free default
    assert "| default | +1.00 (50%) | +3.00 (75%) | 62% |" in out
    assert "| threshold | +1.50 (75%) | -1.00 (-25%) | 25% |" in out
    assert "| guarded-labels (reads labels) | +2.00 (100%) | +4.00 (100%) | 100% |" in out
    # an ablation that keeps only the detections that are true negatives reads the labels too
    assert "| fnc-true-negatives (reads labels) | +2.00 (100%) | +4.00 (100%) | 100% |" in out
    assert out[-2] == "best mean share of the oracle gap over all 2 settings, without labels: default (62%)"
    # the same shift in every seed: a lead of (-25% + 100%) / 2 with no spread, so no sd ratio
    assert out[-1] == "its lead over threshold: +38% ± 0% (sd -; per setting -25%, +100%)"


def test_lead_pairs_seeds_within_each_setting_and_pools_their_spread(load_tool):
    lead = load_tool("leaderboard").lead
    # setting 1: differences 0.1, 0.3 (seed 2 only in the leader: not paired) -> mean 0.2, variance 0.02;
    # setting 2: differences -0.2, 0.0, 0.2 -> mean 0.0, variance 0.04; pooled sd sqrt(0.06) / 2
    first = [{0: 0.5, 1: 0.6, 2: 9.0}, {0: 0.1, 1: 0.3, 2: 0.5}]
    second = [{0: 0.4, 1: 0.3}, {0: 0.3, 1: 0.3, 2: 0.3}]
    diff, sd, per_setting = lead(first, second)
    assert per_setting == pytest.approx([0.2, 0.0])
    assert diff == pytest.approx(0.1)
    assert sd == pytest.approx(math.sqrt(0.06) / 2)
    # one common seed: a mean but no sd
    assert math.isnan(lead([{0: 0.5}], [{0: 0.2, 1: 0.1}])[1])
