"""The study runner on tiny runs: every variant x seed, skip-if-complete, resume of a partial run, the summary."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml

from ifnd.config import ConfigError, load_config
from ifnd.study import run as study_run
from ifnd.study.spec import StudySpec
from ifnd.study.summary import comparison_table, leaderboard_table, mean_std, paired_differences, summary_table

BASE = {
    "method": "simclr", "device": "cpu",
    "data": {"name": "digits", "image_size": 16, "num_workers": 0, "max_train_samples": 128},
    "model": {"backbone": "small_cnn", "proj_hidden_dim": 32, "proj_dim": 16},
    "train": {"epochs": 1, "batch_size": 32, "lr": 0.3}, "knn": {"every": 1, "k": 10},
}


def _study(tmp_path, **extra):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({
        "output_dir": str(tmp_path / "out"), "seeds": [0, 1], "baseline": "baseline", "base": BASE,
        "variants": {"baseline": ["detection.mode=none"],
                     "oracle-full": ["detection.mode=oracle", "detection.oracle=full"]},
        "knn_k": [5, 20], "linear": {"epochs": 2}, **extra}))
    return path


@pytest.mark.slow
def test_study_runs_every_variant_and_seed_then_skips_complete_runs(tmp_path, monkeypatch):
    spec = StudySpec.load(_study(tmp_path, compare=[["oracle-full", "baseline"]]))
    rows = study_run.run_study(spec)
    assert sorted((r["variant"], r["seed"]) for r in rows) == [("baseline", 0), ("baseline", 1),
                                                               ("oracle-full", 0), ("oracle-full", 1)]
    oracle = next(r for r in rows if r["variant"] == "oracle-full")
    assert oracle["fn_precision_end"] == pytest.approx(1.0) and oracle["fn_recall_mean"] == pytest.approx(1.0)
    assert all(0 <= r[k] <= 100 for r in rows for k in ("knn5_top1", "knn20_top1", "linear_top1"))
    out = tmp_path / "out"
    table = list(csv.DictReader((out / "results.csv").open()))
    assert len(table) == 4 and {"knn5_top1", "linear_top1", "fn_precision_mean", "epoch_time_s"} <= set(table[0])
    summary = (out / "summary.md").read_text()
    assert "| oracle-full | 2 |" in summary and "Δ kNN k=5" in summary
    assert "## Paired comparisons" in summary and "| oracle-full | baseline | " in summary
    assert {p.name for p in out.glob("*.png")} == {"accuracy_vs_precision.png", "noise_map.png", "curves.png"}

    # complete runs are skipped; a run that lost its score is scored again, its training resumed (nothing left)
    (spec.run_dir("oracle-full", 1) / "study.json").unlink()
    trained = []
    original = study_run.pretrain
    monkeypatch.setattr(study_run, "pretrain", lambda cfg, resume: trained.append(cfg.output_dir) or original(cfg, resume))
    again = study_run.run_study(spec)
    assert trained == [str(spec.run_dir("oracle-full", 1))] and len(again) == 4
    redone = next(r for r in again if (r["variant"], r["seed"]) == ("oracle-full", 1))
    assert redone["knn20_top1"] == next(r for r in rows if (r["variant"], r["seed"]) == ("oracle-full", 1))["knn20_top1"]


def test_study_file_is_validated_and_set_reaches_study_or_base(tmp_path):
    spec = StudySpec.load(_study(tmp_path), ["output_dir=elsewhere", "seeds=[3, 4, 5]", "train.epochs=2"])
    assert str(spec.output_dir) == "elsewhere" and spec.seeds == (3, 4, 5)
    cfg = spec.config("oracle-full", 4)
    assert cfg.train.epochs == 2 and cfg.seed == 4 and cfg.detection.oracle == "full"
    assert cfg.output_dir == "elsewhere/runs/oracle-full/seed4"
    with pytest.raises(ConfigError, match="train.epoch"):
        StudySpec.load(_study(tmp_path), ["train.epoch=2"])
    with pytest.raises(ConfigError, match="baseline"):
        StudySpec.load(_study(tmp_path, baseline="nope"))
    with pytest.raises(ConfigError, match="unknown"):
        StudySpec.load(_study(tmp_path, sedes=[1]))


def test_seeds_limit_what_runs_now_and_the_summary_keeps_every_finished_run(tmp_path, monkeypatch):
    spec = StudySpec.load(_study(tmp_path))
    ran = []

    def fake_run(spec_, variant, seed):
        ran.append((variant, seed))
        spec_.run_dir(variant, seed).mkdir(parents=True, exist_ok=True)
        row = {"variant": variant, "seed": seed, "status": "done", "knn5_top1": 50.0, "knn20_top1": 50.0}
        (spec_.run_dir(variant, seed) / "study.json").write_text(json.dumps(row))
        return row

    monkeypatch.setattr(study_run, "run_one", fake_run)
    monkeypatch.setattr(study_run, "write_summary", lambda spec_, rows: [])
    assert [(r["variant"], r["seed"]) for r in study_run.run_study(spec, seeds={1})] == [("baseline", 1), ("oracle-full", 1)]
    assert ran == [("baseline", 1), ("oracle-full", 1)]
    rows = study_run.run_study(spec, only={"baseline"}, seeds={0})  # another process's share of the study
    assert ran[2:] == [("baseline", 0)] and len(rows) == 3
    with pytest.raises(ConfigError, match=r"--seeds names \[7\].*--set 'seeds"):
        study_run.run_study(spec, seeds={7})
    with pytest.raises(ConfigError, match="comma-separated integers"):
        study_run.main_study(str(_study(tmp_path)), [], None, "one")


def test_paired_differences_and_mean_std():
    rows = [{"variant": v, "seed": s, "status": "done", "acc": a}
            for v, s, a in [("b", 0, 80.0), ("b", 1, 81.0), ("x", 0, 82.0), ("x", 1, 82.5), ("x", 2, 90.0)]]
    assert paired_differences(rows, "x", "b", "acc") == {0: 2.0, 1: 1.5}  # seed 2 has no baseline
    mean, std = mean_std([2.0, 1.5])
    assert mean == pytest.approx(1.75) and std == pytest.approx(0.35355, abs=1e-4)
    assert mean_std([1.0])[0] == 1.0 and mean_std([1.0])[1] != mean_std([1.0])[1]  # NaN std for one value


def test_a_run_directory_of_another_config_is_refused(tmp_path):
    spec = StudySpec.load(_study(tmp_path))
    run_dir = spec.run_dir("baseline", 0)
    run_dir.mkdir(parents=True)
    other = spec.config("baseline", 0).to_dict()
    other["train"]["lr"] = 0.1
    (run_dir / "config.yaml").write_text(yaml.safe_dump(other))
    with pytest.raises(ConfigError, match="train.lr: 0.1 vs 0.3"):
        study_run.run_study(spec)
    del other["train"]["lr"]  # a key the run's schema did not have yet: not a difference
    other["train"]["lr"] = 0.3
    other.pop("detection")
    (run_dir / "config.yaml").write_text(yaml.safe_dump(other))
    study_run.check_same_config(spec, "baseline", 0)
    other["cpu_threads"] = 7  # a key a resume may change (the study continued with another --set cpu_threads)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(other))
    study_run.check_same_config(spec, "baseline", 0)


def test_summary_lists_variants_without_runs_below_the_table(tmp_path):
    spec = StudySpec.load(_study(tmp_path))
    rows = [{"variant": "baseline", "seed": s, "status": "done", "knn5_top1": 80.0 + s, "knn20_top1": 70.0 + s,
             "linear_top1": 85.0, "epoch_time_s": 1.0} for s in (0, 1)]
    table = summary_table(spec, rows)
    assert "| baseline | 2 | 80.50 ± 0.71 |" in table
    assert "| oracle-full |" not in table and table.rstrip().endswith("Not run yet: oracle-full.")


def test_compare_pairs_are_validated_and_tabled_seed_by_seed(tmp_path):
    with pytest.raises(ConfigError, match="compare"):
        StudySpec.load(_study(tmp_path, compare=[["oracle-full", "nope"]]))
    spec = StudySpec.load(_study(tmp_path, compare=[["baseline", "oracle-full"]]))
    rows = [{"variant": v, "seed": s, "status": "done", "knn5_top1": 70.0 + s + (2.0 * s if v == "oracle-full" else 0.0),
             "knn20_top1": 60.0 + (1.0 if v == "oracle-full" else 0.0), "linear_top1": 80.0}
            for v in ("baseline", "oracle-full") for s in (0, 1)]
    table = comparison_table(spec, rows)
    # knn5: baseline - oracle-full = 0 (seed 0), -2 (seed 1); knn20: -1 both (std 0: no sd); linear: 0
    assert "| baseline | oracle-full | -1.00 ± 1.41 (+0.00, -2.00) | 0.7 | -1.00 ± 0.00 (-1.00, -1.00) | - |" in table
    assert table.rstrip().endswith("| 0.00 ± 0.00 (+0.00, +0.00) | - |")


def test_plot_labels_merge_points_that_would_overlap():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ifnd.study.summary import _number_points

    fig, (ax, key_ax) = plt.subplots(1, 2)
    ax.set(xlim=(0, 1), ylim=(0, 1))
    _number_points(ax, key_ax, [("a", 1.0, 1.0, 1.5), ("b", 0.5, 0.5, math.nan), ("c", 0.99, 0.98, 0.25)])
    assert sorted(t.get_text() for t in ax.texts) == ["1,3", "2"]
    assert key_ax.texts[0].get_text() == " 1 a (+1.50)\n 2 b\n 3 c (+0.25)"
    plt.close(fig)


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "configs" / "studies").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_shipped_study_file_resolves_every_variant(path):
    spec = StudySpec.load(path)
    assert len(spec.seeds) >= 3 and spec.baseline in spec.variants
    for variant in spec.variants:
        assert spec.config(variant, spec.seeds[-1]).seed == spec.seeds[-1]


def test_the_detection_defaults_are_the_study_best_configuration():
    """`detection.*`'s defaults and the Fashion-MNIST IFND config are ifnd-union-all-early's detector
    (docs/results.md), with the first round after a tenth of training; the study keeps IFND's own."""
    root = Path(__file__).resolve().parents[1] / "configs"
    spec = StudySpec.load(root / "studies" / "fmnist_pilot.yaml")
    best = spec.config("ifnd-union-all-early", 0).detection
    chosen = ("combine", "accept_schedule", "accept_start", "accept_end", "loss", "features", "confidence",
              "accept_per", "embedding", "hierarchical")
    for cfg in (load_config(None), load_config(root / "fashion_mnist_moco_ifnd.yaml")):
        assert {k: getattr(cfg.detection, k) for k in chosen} == {k: getattr(best, k) for k in chosen}
        assert cfg.detection.warmup_epochs / cfg.train.epochs == pytest.approx(
            best.warmup_epochs / spec.config("ifnd-union-all-early", 0).train.epochs)
    ifnd = spec.config("ifnd", 0).detection  # the study's IFND row keeps the paper's schedule and averaged levels
    assert (ifnd.combine, ifnd.accept_schedule, ifnd.accept_start) == ("average", "linear", 0.2)


def test_leaderboard_ranks_by_share_of_the_oracle_gap(tmp_path):
    path = _study(tmp_path)
    values = yaml.safe_load(path.read_text())
    values["variants"]["ifnd"] = ["detection.mode=ifnd", "detection.num_clusters=[5]"]
    values["variants"]["threshold"] = ["detection.mode=threshold"]
    path.write_text(yaml.safe_dump(values))
    spec = StudySpec.load(path)
    gain = {"baseline": 0.0, "oracle-full": 4.0, "ifnd": 1.0, "threshold": -1.0}
    rows = [{"variant": v, "seed": s, "status": "done", "knn5_top1": 70.0 + s + g + (0.5 * s if v == "ifnd" else 0),
             "knn20_top1": 60.0, "linear_top1": 80.0, "fn_precision_end": 0.5, "fn_recall_end": 0.25,
             "epoch_time_s": 2.0 if v == "baseline" else 3.0}
            for v, g in gain.items() for s in (0, 1)]
    table = leaderboard_table(spec, rows)
    lines = [line for line in table.splitlines() if line.startswith("| ") and "variant" not in line]
    # oracle gap +4: the oracle reaches 100%, ifnd (+1.0, +1.5) 31%, threshold -25%; epoch time 3 / 2
    assert [line.split(" | ")[0] for line in lines] == ["| oracle-full", "| ifnd", "| threshold"]
    assert lines[1] == "| ifnd | 2 | 1.25 ± 0.35 (+1.00, +1.50) | 3.5 | 31% | 0.50 ± 0.00 | 0.25 ± 0.00 | 1.50 |"
    assert "(+4.00)" in table
    assert leaderboard_table(spec, [r for r in rows if r["variant"] != "oracle-full"]) == ""
    # a guarded variant adds its estimated end precision and abstained rounds; the others show "-" there
    for row in rows:
        row.update({"est_precision_end": 0.8, "guard_abstain_share": 0.25, "guard_level_abstain_share": 0.5}
                   if row["variant"] == "ifnd" else {})
    guarded = leaderboard_table(spec, rows).splitlines()
    assert any(line.endswith("| P end | R end | estimated P end | rounds abstained | levels abstained | epoch time / baseline |") for line in guarded)
    assert "| ifnd | 2 | 1.25 ± 0.35 (+1.00, +1.50) | 3.5 | 31% | 0.50 ± 0.00 | 0.25 ± 0.00 | 0.80 ± 0.00 | 0.25 ± 0.00 | 0.50 ± 0.00 | 1.50 |" in guarded
    assert "| threshold | 2 | -1.00 ± 0.00 (-1.00, -1.00) | - | -25% | 0.50 ± 0.00 | 0.25 ± 0.00 | - | - | - | 1.50 |" in guarded
    # a capped variant adds its end removed share and capped levels after the guard's columns
    for row in rows:
        row.update({"removed_share_end": 0.3, "cap_level_abstain_share": 0.5} if row["variant"] == "ifnd" else {})
    capped = leaderboard_table(spec, rows).splitlines()
    assert any(line.endswith("| levels abstained | removed share end | levels capped | epoch time / baseline |") for line in capped)
    assert "| ifnd | 2 | 1.25 ± 0.35 (+1.00, +1.50) | 3.5 | 31% | 0.50 ± 0.00 | 0.25 ± 0.00 | 0.80 ± 0.00 | 0.25 ± 0.00 | 0.50 ± 0.00 | 0.30 ± 0.00 | 0.50 ± 0.00 | 1.50 |" in capped


def test_guard_figures_read_the_last_round_and_count_abstained_rounds():
    from ifnd.study.run import guard_figures
    history = [{"epoch": 0, "loss": 1.0},
               {"epoch": 1, "round/guard_abstain": 1.0, "round/level0/est_precision": 0.2, "round/level1/est_precision": 0.3},
               {"epoch": 2, "round/guard_abstain": 0.0, "round/level0/est_precision": 0.5, "round/level1/est_precision": 0.7,
                "round/level0/guard_abstain": 1.0, "round/level1/guard_abstain": 0.0}]
    assert guard_figures({"history": history}) == pytest.approx(
        {"est_precision_end": 0.6, "guard_abstain_share": 0.5, "guard_level_abstain_share": 0.5})
    unguarded = guard_figures({"history": history[:1]})
    assert all(math.isnan(v) for v in unguarded.values())


def test_cap_figures_read_the_last_rounds_largest_share_and_count_capped_levels():
    from ifnd.study.run import cap_figures
    history = [{"epoch": 0, "loss": 1.0},
               {"epoch": 1, "round/cap_abstain": 0.0, "round/level0/removed_share": 0.3, "round/level0/cap_abstain": 1.0,
                "round/level1/removed_share": 0.1, "round/level1/cap_abstain": 0.0},
               {"epoch": 2, "round/cap_abstain": 0.0, "round/level0/removed_share": 0.15, "round/level0/cap_abstain": 0.0,
                "round/level1/removed_share": 0.05, "round/level1/cap_abstain": 0.0}]
    assert cap_figures({"history": history}) == pytest.approx(
        {"removed_share_end": 0.15, "cap_level_abstain_share": 0.25})
    assert all(math.isnan(v) for v in cap_figures({"history": history[:1]}).values())


ITM_BASE = {
    "device": "cpu", "data": {"name": "demo", "image_size": 16, "max_train_images": 40, "num_workers": 0,
                              "train_augment": "none"},
    "text": {"word_dim": 8, "hidden_dim": 8}, "model": {"embed_dim": 16},
    "negatives": {"memory_size": 64, "min_positives": 4, "warmup_epochs": 1},
    "train": {"epochs": 2, "batch_size": 32, "lr": 0.001, "lr_decay_epochs": [1], "eval_batch_size": 64},
}


@pytest.mark.slow
def test_itm_study_scores_rsum_and_fne_statistics_and_tables_the_grid(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    path = tmp_path / "itm.yaml"
    path.write_text(yaml.safe_dump({
        "task": "itm", "output_dir": str(tmp_path / "out"), "seeds": [0], "baseline": "infonce@coarse", "base": ITM_BASE,
        "variants": {"infonce@coarse": ["negatives.sampler=infonce"],
                     "fne@fine": ["negatives.sampler=fne", "data.caption_attributes=[6, 6]", "data.caption_bins=6"]},
        "compare": [["fne@fine", "infonce@coarse"]]}, sort_keys=False))
    try:
        spec = StudySpec.load(path)
        assert spec.task == "itm" and spec.config("fne@fine", 0).data.caption_bins == 6
        rows = {r["variant"]: r for r in study_run.run_study(spec)}
    finally:
        torch.set_num_threads(threads)
    assert all(0 <= r[k] <= 600 for r in rows.values() for k in ("rsum", "ext_rsum"))
    assert rows["fne@fine"]["rsum"] <= rows["fne@fine"]["ext_rsum"]  # a fitting image counts as a hit too
    assert 0 <= rows["fne@fine"]["fne/ready_share"] <= 1 and math.isnan(rows["infonce@coarse"]["fne/ready_share"])
    # the measured density follows the knob: the fine captions fit fewer of the 40 images
    assert rows["fne@fine"]["images_per_caption"] < rows["infonce@coarse"]["images_per_caption"]
    out = tmp_path / "out"
    table = list(csv.DictReader((out / "results.csv").open()))
    assert {"rsum", "ext_rsum", "fne/ready_share", "images_per_caption", "epoch_time_s"} <= set(table[0])
    summary = (out / "summary.md").read_text()
    assert "Δ RSUM vs baseline" in summary and "| fne@fine | infonce@coarse | " in summary
    assert "### RSUM by setting" in summary and "| variant | coarse | fine |" in summary
    assert "| infonce | " in summary and "| fne |  | " in summary  # one cell per setting run
    monkeypatch.setattr(study_run, "itm_train", lambda *a, **k: pytest.fail("a complete run was trained again"))
    assert len(study_run.run_study(spec)) == 2


def test_study_task_is_validated(tmp_path):
    with pytest.raises(ConfigError, match="task"):
        StudySpec.load(_study(tmp_path, task="finetune"))
    with pytest.raises(ConfigError, match="detection.mode"):  # an itm study's keys are itm-train's
        StudySpec.load(_study(tmp_path, task="itm", base=ITM_BASE))


def test_transfer_study_fine_tunes_each_pretraining_seed_on_the_same_images():
    root = Path(__file__).resolve().parents[1] / "configs" / "studies"
    pretraining, transfer = StudySpec.load(root / "itm_transfer_pretrain.yaml"), StudySpec.load(root / "itm_transfer.yaml")
    assert transfer.task == "itm" and transfer.seeds == pretraining.seeds
    for variant in pretraining.variants:
        pre = pretraining.config(variant, 0)
        assert (pre.data.name, pre.data.image_size, pre.model.backbone) == ("digits", 16, "small_cnn")
        for seed in transfer.seeds:
            cfg = transfer.config(variant, seed)
            assert cfg.model.image_checkpoint == str(pretraining.run_dir(variant, seed) / "checkpoints" / "last.pt")
            assert (cfg.data.name, cfg.data.image_size) == ("demo", 16)
    assert transfer.config("random-init", 1).model.image_checkpoint == ""
    assert {pretraining.config(v, 0).train.epochs for v in pretraining.variants} == {30}  # one budget
