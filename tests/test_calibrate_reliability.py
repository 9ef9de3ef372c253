"""tools/calibrate_reliability.py: calibration points on hand-made features, the fit, the table and its last line."""

import json

import pytest
import torch
import torch.nn.functional as F


def test_points_carry_every_signal_and_the_true_precision(load_tool):
    tool = load_tool("calibrate_reliability")
    g = torch.Generator().manual_seed(0)
    classes = torch.arange(4).repeat_interleave(25)
    x = F.normalize(torch.eye(6)[classes] + 0.2 * torch.randn(100, 6, generator=g), dim=1)
    views = (F.normalize(x + 0.05 * torch.randn(100, 6, generator=g), dim=1), x)
    points = tool.calibration_points(x, views, classes, [4, 8], [0.5, 1.0], 1, 10, 1, 0.1, 10, 0)
    assert [(p["k"], p["share"]) for p in points] == [(4, 0.5), (4, 1.0), (8, 0.5), (8, 1.0)]
    post_hoc = set(tool.LOGGED_SIGNALS) - {"round_agreement"}  # a post hoc point has no previous round
    assert all(post_hoc <= set(p) and 0.0 <= p["precision"] <= 1.0 for p in points)
    assert points[2]["precision"] > 0.9  # k = 8 splits the 4 classes: pairs stay inside a class


def test_fit_on_one_setting_and_test_on_the_other_from_points(tmp_path, capsys, load_tool):
    tool = load_tool("calibrate_reliability")
    g = torch.Generator().manual_seed(0)
    points = []
    for setting, offset in (("a", 0.0), ("b", 0.1)):  # b: the same relation, shifted
        for i in range(12):
            stability = i / 11
            signals = {name: float(torch.rand(1, generator=g)) for name in tool.LOGGED_SIGNALS}
            points.append({"setting": setting, "run": setting, **signals, "stability": stability,
                           "precision": min(1.0, 0.2 + 0.6 * stability + offset)})
    path = tmp_path / "points.json"
    path.write_text(json.dumps(points))
    assert tool.main(["--from-points", str(path), "--fit-on", "a", "--save", str(tmp_path / "est.yaml")]) == 0
    out = capsys.readouterr().out
    assert "| stability | +1.000 | +1.000 | " in out
    assert out.strip().splitlines()[-1].endswith("+1.000")  # the out-of-setting rank correlation
    committed = tool.PrecisionEstimator.load()  # the guard's estimator, scored on each setting as well
    scores = [tool.evaluate(committed, [p for p in points if p["setting"] == name]) for name in ("a", "b")]
    assert f"rank correlation: a {scores[0]:+.3f}, b {scores[1]:+.3f}" in out
    saved = tool.PrecisionEstimator.load(tmp_path / "est.yaml")
    assert "stability" in saved.signals and saved.notes["fitted_on"] == "a"
    with pytest.raises(SystemExit):
        tool.main(["--from-points", str(path), "--fit-on", "c"])


def _round_log(run_dir, entries):
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps({"history": entries}))
    return run_dir


def test_round_logs_give_one_point_per_level_and_round(tmp_path, load_tool):
    tool = load_tool("calibrate_reliability")
    signals = {f"round/level{l}/sig_{name}": 0.1 * (l + 1) for l in (0, 1) for name in tool.ROUND_SIGNALS}
    entries = [{"epoch": 0, "loss": 1.0},  # an epoch without a round
               {"epoch": 1, **signals, "round/level0/pair_precision": 0.3, "round/level1/pair_precision": 0.6,
                "round/level0/est_precision": 0.25},
               {"epoch": 2, **signals, "round/level0/sig_round_agreement": 0.9,
                "round/level0/pair_precision": float("nan"), "round/level1/pair_precision": 0.7}]
    points = tool.round_points("s", _round_log(tmp_path / "run", entries))
    assert [(p["epoch"], p["level"], p["precision"]) for p in points] == [(1, 0, 0.3), (1, 1, 0.6), (2, 1, 0.7)]
    assert points[1]["margin"] == pytest.approx(0.2) and points[0]["stability"] == pytest.approx(0.1)
    assert all(p["embedding"] == "round" and p["view_agreement"] != p["view_agreement"] for p in points)  # NaN
    assert points[2]["round_agreement"] != points[2]["round_agreement"]  # level 1 logged none at epoch 2
    assert points[0]["est_precision"] == 0.25 and points[1]["est_precision"] != points[1]["est_precision"]


def test_from_rounds_fits_on_one_setting_and_refuses_runs_without_signals(tmp_path, capsys, load_tool):
    tool = load_tool("calibrate_reliability")
    g = torch.Generator().manual_seed(0)
    runs = {}
    for setting, offset in (("a", 0.0), ("b", 0.2)):  # b: precision follows margin, shifted
        entries = []
        for epoch in range(10):
            sig = {f"round/level0/sig_{n}": float(torch.rand(1, generator=g)) for n in tool.ROUND_SIGNALS}
            sig["round/level0/sig_margin"] = epoch / 10
            entries.append({"epoch": epoch, **sig, "round/level0/pair_precision": 0.1 + 0.05 * epoch + offset})
        runs[setting] = _round_log(tmp_path / setting, entries)
    assert tool.main(["--from-rounds", f"a={runs['a']}", "--from-rounds", f"b={runs['b']}", "--fit-on", "a"]) == 0
    out = capsys.readouterr().out
    assert "| margin | +1.000 | +1.000 | " in out
    assert out.strip().splitlines()[-1].endswith("+1.000")
    bare = _round_log(tmp_path / "bare", [{"epoch": 0, "round/level0/pair_precision": 0.5}])
    with pytest.raises(SystemExit):
        tool.main(["--from-rounds", f"a={bare}", "--from-rounds", f"b={runs['b']}"])
    assert "logs no round signals; pass runs made with detection.guard=true" in capsys.readouterr().err


def test_one_setting_fits_and_saves_only_with_save(tmp_path, capsys, load_tool):
    tool = load_tool("calibrate_reliability")
    entries = [{"epoch": e, **{f"round/level0/sig_{n}": (e * 7 % 5) / 5 for n in tool.ROUND_SIGNALS},
                "round/level0/sig_margin": e / 10, "round/level0/pair_precision": 0.1 + 0.05 * e} for e in range(8)]
    run = _round_log(tmp_path / "a", entries)
    with pytest.raises(SystemExit):
        tool.main(["--from-rounds", f"a={run}"])
    assert "need points of at least two settings" in capsys.readouterr().err
    assert tool.main(["--from-rounds", f"a={run}", "--save", str(tmp_path / "est.yaml")]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "fitted on a only: no other setting, no out-of-setting test"
    assert tool.PrecisionEstimator.load(tmp_path / "est.yaml").notes["fitted_on"] == "a"
