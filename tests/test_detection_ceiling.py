"""tools/detection_ceiling.py: k-means pair counts on hand-made points, and the table from a tiny study."""

from __future__ import annotations

import pytest
import torch
import yaml

from ifnd.study import run as study_run
from ifnd.study.spec import StudySpec

def test_kmeans_pairs_per_level_and_union_on_separated_points(load_tool):
    tool = load_tool("detection_ceiling")
    # two tight classes of 4 points, far apart: k = 2 finds them (P = R = 1); k = 1 flags every pair
    noise = 0.01 * torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
    points = torch.tensor([[1.0, 0.0]] * 4 + [[0.0, 1.0]] * 4) + noise
    classes = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    counts = tool.kmeans_pairs(torch.nn.functional.normalize(points, dim=1), classes, [2, 1], niter=10, seed=0)
    assert (counts["k=2"].precision, counts["k=2"].recall) == (1.0, 1.0)
    assert counts["k=1"] == tool.PairCounts(detected=8 * 7, true_positive=2 * 4 * 3, actual=2 * 4 * 3)
    assert counts["union"] == counts["k=1"]  # the k = 2 pairs are inside the k = 1 pairs


@pytest.mark.slow
def test_the_tool_tables_every_finished_run_of_a_tiny_study(tmp_path, capsys, load_tool):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({
        "output_dir": str(tmp_path / "out"), "seeds": [0, 1], "baseline": "baseline",
        "base": {"method": "simclr", "device": "cpu",
                 "data": {"name": "digits", "image_size": 16, "num_workers": 0, "max_train_samples": 64},
                 "model": {"backbone": "small_cnn", "proj_hidden_dim": 32, "proj_dim": 16},
                 "train": {"epochs": 1, "batch_size": 32, "lr": 0.3}, "knn": {"every": 1, "k": 5},
                 "detection": {"num_clusters": [5, 10]}},
        "variants": {"baseline": ["detection.mode=none"], "ifnd": ["detection.mode=ifnd"]},
        "knn_k": [5], "linear": {"epochs": 1}}))
    tool = load_tool("detection_ceiling")
    assert tool.main(["--config", str(path), "--variants", "baseline"]) == 1  # nothing finished yet
    study_run.run_study(StudySpec.load(path), only={"baseline"})
    assert tool.main(["--config", str(path), "--variants", "baseline,ifnd", "--recall", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "skipping ifnd seed 0" in out and "| ifnd |" not in out
    assert "| baseline | head | 2 | " in out and "| baseline | backbone | 2 | " in out
    assert "global P@R0.5 | per-anchor P@R0.5 | k-means k=5 P / R | k-means k=10 P / R | k-means union P / R |" in out
    with pytest.raises(SystemExit):
        tool.main(["--config", str(path), "--variants", "nope"])
