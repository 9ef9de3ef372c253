"""tools/compare_fne.py on a tiny experiment: every row x seed runs, the tables print, complete runs are skipped."""

from __future__ import annotations

import json

import pytest
import torch
import yaml


def test_run_folder_names_follow_the_row_not_its_position(load_tool):
    tool = load_tool("compare_fne")
    assert tool.run_folder("VSE++ (hardest in batch, online x online)") == "vse-hardest-in-batch-online-x-online"
    assert tool.run_folder("FNE, Bayes step off") == "fne-bayes-step-off"


@pytest.mark.slow
def test_every_row_and_seed_runs_then_complete_runs_are_skipped(tmp_path, monkeypatch, capsys, load_tool):
    threads = torch.get_num_threads()
    experiment = {
        "base": {"device": "cpu", "data": {"name": "demo", "image_size": 16, "max_train_images": 40, "num_workers": 0,
                                          "train_augment": "none"},
                 "text": {"word_dim": 8, "hidden_dim": 8}, "model": {"embed_dim": 16},
                 "negatives": {"memory_size": 64, "min_positives": 4, "warmup_epochs": 1},
                 "train": {"epochs": 2, "batch_size": 32, "lr": 0.001, "lr_decay_epochs": [1], "eval_batch_size": 64}},
        "runs": {"InfoNCE": ["negatives.sampler=infonce"], "FNE, batch + memory": ["negatives.sampler=fne"]},
        "seeds": [0, 1], "threads": 1, "out": str(tmp_path / "out"),
    }
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(experiment))
    tool = load_tool("compare_fne")
    try:
        tool.main(["--config", str(path)])
        first = capsys.readouterr().out
        assert "| InfoNCE |" in first and "| FNE, batch + memory |" in first
        assert "test: 1,000 captions" in first and "shared verbatim" in first
        fne_rows = first.split("FNE's statistics")[1]
        assert "| FNE, batch + memory |" in fne_rows and "| InfoNCE |" not in fne_rows  # evidence for FNE runs only
        for folder in ("infonce", "fne-batch-memory"):
            for seed in (0, 1):
                score = json.loads((tmp_path / "out" / folder / f"seed{seed}" / "score.json").read_text())
                assert 0 <= score["rsum"] <= 600
        monkeypatch.setattr(tool, "itm_train", lambda *a, **k: pytest.fail("a complete run was trained again"))
        tool.main(["--config", str(path)])
        assert capsys.readouterr().out.split("demo set")[1] == first.split("demo set")[1]  # same tables from the cache
    finally:
        torch.set_num_threads(threads)
