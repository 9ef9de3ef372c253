"""tools/bench_pretrain.py: every detector and peer objective times one step beside the plain step."""

from __future__ import annotations

import pytest

FLAGS = ["--backbone", "small_cnn", "--image-size", "16", "--batch-size", "8", "--device", "cpu", "--methods", "simclr",
         "--num-samples", "64", "--clusters", "4,8", "--steps", "1", "--warmup", "0"]


def test_rows_for_each_detection_and_objective_with_the_ratio_to_the_plain_step(load_tool, capsys):
    load_tool("bench_pretrain").main([*FLAGS, "--detection", "none,ifnd,threshold,fnc", "--objective",
                                      "infonce,decoupled"])
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines() if line.startswith("| simclr |")]
    variants = {(row[1], row[2]): row for row in rows}
    # each detection with InfoNCE, the other objective without detection; no duplicate plain row
    assert list(variants) == [("none", "infonce"), ("ifnd", "infonce"), ("threshold", "infonce"), ("fnc", "infonce"),
                              ("none", "decoupled")]
    assert variants[("none", "infonce")][4] == "1.000"
    assert all(float(row[3]) > 0 and float(row[4]) > 0 for row in rows)


def test_a_detection_that_reads_labels_is_refused_by_name(load_tool):
    with pytest.raises(SystemExit, match="detections fnc, ifnd, none, threshold"):
        load_tool("bench_pretrain").main([*FLAGS, "--detection", "none,oracle"])
