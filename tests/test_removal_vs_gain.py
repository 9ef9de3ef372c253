"""tools/removal_vs_gain.py: the removed share read from round logs and epoch tallies, and its table."""

import math

import pytest


def test_round_shares_prefer_the_logged_share_and_derive_it_from_p_and_r_otherwise(load_tool):
    tool = load_tool("removal_vs_gain")
    history = [{"epoch": 0, "loss": 1.0},
               {"epoch": 1, "round/level0/pair_precision": 0.5, "round/level0/pair_recall": 0.6,
                "round/level1/pair_precision": 0.25, "round/level1/pair_recall": 0.5},
               {"epoch": 2, "round/level0/pair_precision": 0.0, "round/level0/pair_recall": 0.0},
               {"epoch": 3, "round/level0/pair_precision": 0.5, "round/level0/pair_recall": 0.6,
                "round/level0/removed_share": 0.3, "round/level1/removed_share": 0.1}]
    # same-class share 0.1: level 0 flags 0.6 * 0.1 / 0.5 = 0.12, level 1 0.5 * 0.1 / 0.25 = 0.2
    assert tool.round_shares(history, 0.1) == pytest.approx([0.2, 0.0, 0.3])
    history[3]["round/level0/cap_abstain"] = 1.0  # withdrawn by the cap: the loss kept level 1 only
    history[1]["round/level1/guard_abstain"] = 1.0  # withdrawn by the guard
    assert tool.round_shares(history, 0.1) == pytest.approx([0.12, 0.0, 0.1])


def test_tally_shares_are_r_times_same_class_over_p_per_epoch(load_tool):
    tool = load_tool("removal_vs_gain")
    history = [{"epoch": 0}, {"epoch": 1, "fn_precision": 0.1, "fn_recall": 0.9}, {"epoch": 2, "fn_precision": 0.0, "fn_recall": 0.0}]
    assert tool.tally_shares(history, 0.1) == pytest.approx([0.9])


def test_the_table_puts_the_largest_removal_first_with_per_seed_deltas(load_tool):
    tool = load_tool("removal_vs_gain")
    rows = [["s", "small", "embedding", 3, 0.04, 0.05, 0.2, 0.1, [0.1, 0.2, 0.3]],
            ["s", "large", "embedding", 3, 0.30, 0.33, -2.0, 0.5, [-1.5, -2.0, -2.5]],
            ["s", "one", "labels", 1, 0.10, 0.10, 0.5, math.nan, [0.5]]]
    lines = tool.table(rows).splitlines()
    assert lines[2] == "| s | large | embedding | 3 | 0.30-0.33 | -2.00 ± 0.50 (-1.50, -2.00, -2.50) | 4.0 |"
    assert lines[3].startswith("| s | one | labels | 1 | 0.10-0.10 |") and lines[3].endswith("| - |")
    assert lines[4].startswith("| s | small |")
