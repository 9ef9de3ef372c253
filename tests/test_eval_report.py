"""The `report` table and plots from hand-written run folders, and tools/run_protocols.py."""

import json
import math
import os
import sys
from pathlib import Path

import pytest
import yaml

from ifnd.cli import main
from ifnd.eval.checkpoints import EvalError
from ifnd.eval.report import MISSING, curve, load_run, markdown_table, plot_curves


def run_cli(*argv: str) -> int:
    return main(list(argv))


def write_run(root: Path, name: str, detection: dict, metrics: dict, evals: dict[str, dict]) -> Path:
    run = root / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"method": "simclr", "detection": detection}))
    (run / "metrics.json").write_text(json.dumps(metrics))
    for folder, values in evals.items():
        (run / "eval" / folder).mkdir(parents=True)
        (run / "eval" / folder / "metrics.json").write_text(json.dumps(values))
    return run


@pytest.fixture
def runs(tmp_path):
    baseline = write_run(
        tmp_path, "baseline", {"mode": "none", "loss": "elimination", "features": "bank"},
        {"method": "simclr", "knn_top1": 61.5, "fn_precision": math.nan, "fn_recall": math.nan, "train_time_s": 123.4,
         "history": [{"epoch": 0, "loss": 5.0, "knn_top1": 50.0}, {"epoch": 1, "loss": 4.5, "knn_top1": 55.0}]},
        {"linear": {"protocol": "linear", "top1": 70.25, "top5": 95.0},
         "semisup_1pct": {"protocol": "semisup", "fraction": 0.01, "top1": 40.5, "top5": 80.0}},
    )
    ifnd = write_run(
        tmp_path, "ifnd", {"mode": "ifnd", "loss": "attraction", "features": "pass"},
        {"method": "simclr", "knn_top1": 60.0, "fn_precision": 0.8125, "fn_recall": 0.4375, "train_time_s": 200.0,
         "history": [{"epoch": 0, "loss": 5.1},
                     {"epoch": 1, "loss": 4.4, "round/accepted_share": 0.2, "fn_precision": 0.7, "fn_recall": 0.3}]},
        {"knn": {"protocol": "knn", "top1": 66.75, "top5": 90.0},
         "semisup_10pct": {"protocol": "semisup", "fraction": 0.1, "top1": 75.5, "top5": 97.0}},
    )
    return baseline, ifnd


def row_of(table: str, name: str) -> list[str]:
    line = next(line for line in table.splitlines() if line.startswith(f"| {name} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_table_holds_the_values_of_the_metrics_files(runs):
    table = markdown_table([load_run(r) for r in runs])
    assert table.splitlines()[0].startswith("| run | method | detection | kNN top-1 | linear top-1 | 1% top-1 | 10% top-1")
    assert row_of(table, "baseline") == ["baseline", "simclr", "none", "61.50", "70.25", "40.50", MISSING, MISSING,
                                         MISSING, "123"]
    # kNN from eval/knn (not the pretraining monitor's 60.0); detection precision / recall from metrics.json
    assert row_of(table, "ifnd") == ["ifnd", "simclr", "ifnd/attraction/pass", "66.75", MISSING, MISSING, "75.50",
                                     "0.812", "0.438", "200"]


def test_newest_evaluation_of_a_protocol_wins(runs):
    baseline = runs[0]
    newer = baseline / "eval" / "linear_again"
    newer.mkdir()
    (newer / "metrics.json").write_text(json.dumps({"protocol": "linear", "top1": 71.0, "top5": 96.0}))
    os.utime(newer / "metrics.json", (1e10, 1e10))
    assert row_of(markdown_table([load_run(baseline)]), "baseline")[4] == "71.00"


def test_report_command_prints_the_table_and_writes_plots(runs, tmp_path, capsys):
    assert run_cli("report", *map(str, runs), "--plots", str(tmp_path / "plots")) == 0
    out = capsys.readouterr().out
    assert "| ifnd | simclr | ifnd/attraction/pass | 66.75 |" in out
    names = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert names == ["accepted_share.png", "fn_precision_recall.png", "knn_top1.png", "loss.png"]
    assert all((tmp_path / "plots" / n).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for n in names)


def test_plots_skip_curves_that_no_run_has(runs, tmp_path):
    written = plot_curves([load_run(runs[0])], tmp_path)
    assert sorted(p.name for p in written) == ["knn_top1.png", "loss.png"]


def test_curve_keeps_finite_values_in_epoch_order():
    history = [{"epoch": 0, "loss": 2.0}, {"epoch": 1, "loss": math.nan}, {"epoch": 2, "loss": 1.0}, {"epoch": 3}]
    assert curve(history, "loss") == ([1, 3], [2.0, 1.0])


def test_a_folder_that_is_not_a_run_is_an_error(tmp_path, capsys):
    with pytest.raises(EvalError, match="not a run directory.*python -m ifnd pretrain"):
        load_run(tmp_path)
    assert run_cli("report", str(tmp_path / "nope")) == 2
    assert "error: " in capsys.readouterr().err


def test_run_protocols_tool_plans_both_runs_and_every_protocol(tmp_path, load_tool):
    tool = load_tool("run_protocols")
    args = tool.parse_args(["--out", str(tmp_path), "--epochs", "3", "--samples", "500", "--ifnd-set", "detection.num_clusters=[10]"])
    commands = tool.plan(args)
    assert all(c[:3] == [sys.executable, "-m", "ifnd"] for c in commands)
    pretrains = [c for c in commands if c[3] == "pretrain"]
    assert len(pretrains) == 2
    assert "detection.mode=none" in pretrains[0] and "detection.mode=ifnd" in pretrains[1]
    assert "detection.num_clusters=[10]" in pretrains[1] and "detection.num_clusters=[10]" not in pretrains[0]
    for c in pretrains:
        assert {"train.epochs=3", "data.max_train_samples=500", "data.name=fashion_mnist"} <= set(c)
    evaluations = [(c[3], c[c.index("--fraction") + 1] if "--fraction" in c else None) for c in commands[2:-1]]
    assert evaluations == [("linear", None), ("knn", None), ("semisup", "0.01"), ("semisup", "0.1")] * 2
    assert commands[-1][3] == "report" and commands[-1][-2:] == ["--plots", str(tmp_path / "plots")]
    assert tool.main(["--out", str(tmp_path), "--dry-run"]) == 0
