"""tools/choose_k_curve.py on a tiny finished run: a row per k, and the k a round would choose."""

from __future__ import annotations

import re

import pytest
import yaml

from ifnd.cli import main as ifnd_main


@pytest.mark.slow
def test_the_curve_of_a_tiny_run_rows_every_k_and_names_the_choice(tmp_path, load_tool):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "method": "simclr", "device": "cpu", "output_dir": str(tmp_path / "run"),
        "data": {"name": "digits", "image_size": 16, "num_workers": 0, "max_train_samples": 200},
        "model": {"backbone": "small_cnn", "proj_hidden_dim": 32, "proj_dim": 16},
        "train": {"epochs": 1, "batch_size": 64, "lr": 0.3}, "knn": {"every": 0}}))
    assert ifnd_main(["pretrain", "--config", str(config)]) == 0
    lines = load_tool("choose_k_curve").curve(tmp_path / "run", [2, 4, 8, 40], 150)
    assert lines[0].startswith(f"{tmp_path / 'run'}: 200 rows, 10 classes, sample 150")
    rows = [line for line in lines if re.match(r"\| \d+ \|", line)]
    assert [int(row.split("|")[1]) for row in rows] == [2, 4, 8, 40]
    for row in rows:
        silhouette, precision, recall = (float(v) for v in row.split("|")[2:5])
        assert -1.0 <= silhouette <= 1.0 and 0.0 <= precision <= 1.0 and 0.0 < recall <= 1.0
    chosen = int(re.fullmatch(r"choose_k: k = (\d+), levels \[\d+, \d+\]", lines[-1]).group(1))
    assert chosen in (2, 4, 8)  # 40 leaves fewer than 10 of the 150 sampled rows per cluster
