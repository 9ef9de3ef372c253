"""The removal cap on hand-made tables: the share of negatives a level removes, and which levels it withdraws."""

import json
from pathlib import Path

import pytest
import torch

from ifnd.config import ConfigError, resolve
from ifnd.falseneg.removal_cap import cap_levels, removed_share
from ifnd.pretrain.task import PretrainTask
from ifnd.runtime.loop import Engine


def last_epoch(cfg) -> dict:
    """The last epoch's record of a finished run's ``metrics.json``."""
    return json.loads((Path(cfg.output_dir) / "metrics.json").read_text())["history"][-1]


def test_removed_share_counts_ordered_pairs_of_accepted_members_by_hand():
    # clusters of 3 and 2 among 6 samples, one not accepted: (3*2 + 2*1) / (6*5) = 8 / 30
    assert removed_share(torch.tensor([0, 0, 0, 1, 1, -1])) == pytest.approx(8 / 30)
    assert removed_share(torch.tensor([0, 1, 2, 3])) == 0.0  # singletons remove nothing
    assert removed_share(torch.full((5,), -1)) == 0.0
    assert removed_share(torch.zeros(4, dtype=torch.long)) == 1.0  # one cluster: every negative
    assert removed_share(torch.tensor([0])) == 0.0
    # k balanced clusters of m remove (m - 1) / (k m - 1), about 1/k
    assert removed_share(torch.arange(10).repeat_interleave(100)) == pytest.approx(99 / 999)


def test_removed_share_refuses_a_table_instead_of_a_level():
    with pytest.raises(ValueError, match=r"\[N\]"):
        removed_share(torch.zeros(2, 3, dtype=torch.long))


def test_cap_withdraws_only_the_levels_above_it():
    coarse = torch.arange(2).repeat_interleave(10)  # 2 clusters of 10: 180 / 380 = 0.47
    fine = torch.arange(10).repeat_interleave(2)  # 10 of 2: 20 / 380 = 0.05
    capped, report = cap_levels(torch.stack([coarse, fine]), 0.2)
    assert (capped[0] == -1).all() and torch.equal(capped[1], fine)
    assert report["level0/removed_share"] == pytest.approx(180 / 380)
    assert report["level1/removed_share"] == pytest.approx(20 / 380)
    assert report["level0/cap_abstain"] == 1.0 and report["level1/cap_abstain"] == 0.0
    assert report["cap_abstain"] == 0.0


def test_a_cap_of_one_withdraws_nothing_and_zero_withdraws_every_level_with_a_pair():
    table = torch.stack([torch.zeros(6, dtype=torch.long), torch.tensor([0, 1, 2, 3, 4, -1])])
    kept, report = cap_levels(table, 1.0)
    assert torch.equal(kept, table) and report["cap_abstain"] == 0.0
    capped, report = cap_levels(table, 0.0)
    assert (capped[0] == -1).all() and torch.equal(capped[1], table[1])  # singletons flag no pair
    capped, report = cap_levels(table[:1], 0.0)
    assert report["cap_abstain"] == 1.0
    assert torch.equal(table, torch.stack([torch.zeros(6, dtype=torch.long), torch.tensor([0, 1, 2, 3, 4, -1])]))


def test_the_cap_out_of_range_is_refused():
    with pytest.raises(ValueError, match="max_removed_share"):
        cap_levels(torch.zeros(1, 4, dtype=torch.long), 1.5)
    with pytest.raises(ConfigError, match="detection.max_removed_share.*must lie in"):
        resolve({"detection": {"mode": "ifnd", "max_removed_share": -0.1}})


def test_the_cap_is_on_by_default_and_withdraws_a_coarse_level_in_a_run(tiny_cfg):
    cfg = tiny_cfg(method="simclr", train={"epochs": 2},
                   detection={"mode": "ifnd", "num_clusters": [1, 8], "warmup_epochs": 1})
    assert cfg.detection.max_removed_share == 0.2
    round_ = [h for h in Engine(cfg, PretrainTask).fit()["history"] if "round/accepted_share" in h][0]
    assert round_["round/level0/removed_share"] == 1.0 and round_["round/level0/cap_abstain"] == 1.0
    assert round_["round/level1/removed_share"] < 0.2 and round_["round/level1/cap_abstain"] == 0.0
    assert round_["round/level0/pair_precision"] > 0.0  # the table it judged, before the cap
    assert last_epoch(cfg)["fn_level0_recall"] == 0.0  # the withdrawn level removed nothing


def test_without_the_cap_the_same_run_removes_the_coarse_levels_pairs(tiny_cfg):
    cfg = tiny_cfg(method="simclr", train={"epochs": 2},
                   detection={"mode": "ifnd", "num_clusters": [1, 8], "warmup_epochs": 1, "max_removed_share": 1.0})
    round_ = [h for h in Engine(cfg, PretrainTask).fit()["history"] if "round/accepted_share" in h][0]
    assert "round/level0/cap_abstain" not in round_
    assert last_epoch(cfg)["fn_level0_recall"] == 1.0
