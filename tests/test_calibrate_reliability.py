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
    assert all(set(tool.LOGGED_SIGNALS) <= set(p) and 0.0 <= p["precision"] <= 1.0 for p in points)
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
