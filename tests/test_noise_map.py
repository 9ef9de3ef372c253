"""tools/noise_map.py: the grid and the break-even precision from a tiny study file with hand-written results."""

from __future__ import annotations

import json
import math

import pytest
import yaml

BASE = {"method": "simclr", "device": "cpu", "data": {"name": "digits", "image_size": 16, "max_train_samples": 64},
        "model": {"backbone": "small_cnn"}, "train": {"epochs": 1, "batch_size": 32}}


def _noisy(p: float, r: float) -> list[str]:
    return ["detection.mode=noisy_oracle", "detection.oracle=full", f"detection.oracle_precision={p}",
            f"detection.oracle_recall={r}"]


def _study(tmp_path, gains: dict[str, list[float]]) -> str:
    variants = {"baseline": ["detection.mode=none"], "oracle-full": ["detection.mode=oracle", "detection.oracle=full"],
                "ifnd": ["detection.mode=ifnd", "detection.num_clusters=[4]"],
                **{f"noisy-p{int(p * 100)}-r{int(r * 100)}": _noisy(p, r) for p in (0.1, 0.3, 0.5) for r in (0.3, 0.9)}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "out"), "seeds": [0, 1, 2], "base": BASE,
                                    "variants": variants, "knn_k": [5]}))
    for variant in ["baseline", *gains]:
        for seed, gain in enumerate(gains.get(variant, [0.0, 0.0, 0.0])):
            run = tmp_path / "out" / "runs" / variant / f"seed{seed}"
            run.mkdir(parents=True)
            row = {"variant": variant, "seed": seed, "status": "done", "knn5_top1": 50.0 + seed + gain}
            (run / "study.json").write_text(json.dumps(row))
    return str(path)


def test_break_even_interpolates_the_highest_crossing(load_tool):
    tool = load_tool("noise_map")
    assert tool.break_even({0.1: -1.0, 0.3: 1.0, 0.5: 2.0}) == ("=", pytest.approx(0.2))
    # two crossings: the highest one (between 0.5 and 0.8) is the break-even
    assert tool.break_even({0.1: 0.5, 0.3: -0.5, 0.5: -0.25, 0.8: 0.75}) == ("=", pytest.approx(0.575))
    assert tool.break_even({0.1: 0.2, 0.5: 1.0}) == ("<", 0.1)
    assert tool.break_even({0.1: -0.2, 0.5: 0.0}) == (">", 0.5)
    relation, value = tool.break_even({})
    assert relation == "?" and math.isnan(value)


def test_grid_and_break_even_per_recall_from_finished_runs(tmp_path, capsys, load_tool):
    tool = load_tool("noise_map")
    gains = {"oracle-full": [2.0, 2.0, 2.0], "ifnd": [1.0, 1.0, 1.0],  # ifnd is no noise-map point
             "noisy-p10-r30": [-1.0, -2.0, -3.0], "noisy-p30-r30": [1.0, 1.0, 1.0], "noisy-p50-r30": [1.5, 1.0, 2.0],
             "noisy-p10-r90": [0.5, 0.5, 0.5], "noisy-p30-r90": [1.0, 2.0, 3.0],
             "noisy-p50-r90": [1.0, 1.0]}  # two seeds: shown, not counted
    assert tool.main([_study(tmp_path, gains)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "| precision \\ recall | 0.3 | 0.9 | 1 |" in out
    assert "| 1 | - | - | 2.00 ± 0.00 (+2.00, +2.00, +2.00) |" in out
    assert "| 0.1 | -2.00 ± 1.00 (-1.00, -2.00, -3.00); 2.0 sd | 0.50 ± 0.00 (+0.50, +0.50, +0.50) | - |" in out
    assert "| 0.5 | 1.50 ± 0.50 (+1.50, +1.00, +2.00); 3.0 sd | 1.00 ± 0.00 (+1.00, +1.00) | - |" in out
    # recall 0.3: -2.0 at 0.1, +1.0 at 0.3 -> zero at 0.1 + 0.2 * 2/3; recall 0.9 gains everywhere measured
    assert out[-2] == "break-even precision: recall 0.3 = 0.23, recall 0.9 < 0.10"
    # recall 0.3: 0.5 gains by 3 sd, 0.3 by +1.0 with sd 0 (counts), 0.1 loses; recall 0.9: 0.3 gains by 1 sd only
    assert out[-1] == "measurable gain (> 2 sd) from precision: recall 0.3 0.3, recall 0.9 none"


def test_measurable_from_stops_at_the_first_precision_without_a_clear_gain(load_tool):
    tool = load_tool("noise_map")
    assert tool.measurable_from({0.1: [5.0, 5.1, 5.2], 0.3: [0.1, -0.1, 0.3], 0.5: [1.0, 1.1, 1.2]}) == 0.5
    assert math.isnan(tool.measurable_from({0.5: [1.0, -1.0, 0.5]}))
