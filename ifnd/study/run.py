"""Run a study: every variant x seed, skipping what is complete, then score and summarise.

Each run's directory holds the pretraining run and, once it is scored, ``study.json`` (its
row of ``results.csv``). A run with ``study.json`` is complete and skipped; a run stopped
mid-way resumes from its last checkpoint. So a study can be stopped at any time (Ctrl-C,
a lost machine) and continued across days with the same command.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from ifnd.config import ConfigError, flatten, format_override, read_yaml
from ifnd.data.build import build_sources
from ifnd.eval.checkpoints import build_encoder, read_encoder_weights
from ifnd.eval.linear import encode, linear_probe
from ifnd.eval.schema import load_eval_config
from ifnd.itm.train import itm_train
from ifnd.metrics.knn import knn_accuracy
from ifnd.pretrain.task import pretrain
from ifnd.runtime.distributed import pick_device
from ifnd.runtime.checkpoint import RESUME_MAY_CHANGE
from ifnd.runtime.loop import TrainingDiverged
from ifnd.runtime.run import RunDir
from ifnd.study.itm import itm_row
from ifnd.study.spec import StudySpec
from ifnd.study.summary import CAP, write_summary

log = logging.getLogger(__name__)


def timing_figures(metrics: dict[str, Any]) -> dict[str, float]:
    """Mean epoch time (training steps only) and mean clustering-round time (NaN without rounds).

    The epoch time is ``train_time_s / epochs_done`` of ``metrics.json``, not the mean of the history's
    ``epoch_time_s``: the engine's ``train_time_s`` counts the steps before a stop too, while an epoch
    resumed mid-way may time only the steps after the resume.
    """
    rounds = [h["round/round_time_s"] for h in metrics["history"] if "round/round_time_s" in h]
    return {"epoch_time_s": metrics["train_time_s"] / max(1, metrics["epochs_done"]),
            "round_time_s": sum(rounds) / len(rounds) if rounds else math.nan}


def score_encoder(spec: StudySpec, run_dir: Path) -> dict[str, float]:
    """kNN top-1 at every ``spec.knn_k`` and linear-probe top-1 (cached features) of a run's final backbone."""
    weights = read_encoder_weights(run_dir / "checkpoints" / "last.pt")
    overrides = [format_override(f"linear.{key}", value) for key, value in spec.linear.items()]
    cfg = load_eval_config(None, [*overrides, "linear.cache_features=true",
                                  format_override("output_dir", str(run_dir / "eval" / "linear"))], weights.saved_config)
    device = pick_device(cfg.device)
    encoder, feat_dim = build_encoder(weights, cfg.model.backbone, cfg.model.cifar_stem, cfg.model.norm)
    encoder = encoder.to(device)
    train_src, test_src = build_sources(cfg)
    features = (*encode(encoder, train_src, cfg, device), *encode(encoder, test_src, cfg, device))
    scores = {f"knn{k}_top1": knn_accuracy(*features, k, cfg.knn.temperature)["top1"] for k in spec.knn_k}
    run = RunDir(cfg)
    try:
        scores["linear_top1"] = linear_probe(encoder, feat_dim, train_src, test_src, cfg, device, run,
                                             features=features)["top1"]
    finally:
        run.close()
    return scores


def level_values(entry: dict[str, Any], suffix: str) -> list[float]:
    """The per-level values ``round/level<l><suffix>`` of one history entry."""
    return [v for k, v in entry.items() if k.startswith("round/level") and k.endswith(suffix)]


def guard_figures(metrics: dict[str, Any]) -> dict[str, float]:
    """What the guard (``detection.guard``) made of a run's rounds: ``est_precision_end``, its estimated pair
    precision at the last round (mean over the levels, to set beside the true end precision),
    ``guard_abstain_share``, the share of rounds where every level abstained, and ``guard_level_abstain_share``,
    the share of levels over all rounds that abstained. NaN for a run without a guard."""
    rounds = [h for h in metrics.get("history", []) if "round/guard_abstain" in h]
    if not rounds:
        return dict.fromkeys(("est_precision_end", "guard_abstain_share", "guard_level_abstain_share"), math.nan)
    estimates = level_values(rounds[-1], "/est_precision")
    withdrawn = [v for h in rounds for v in level_values(h, "/guard_abstain")]
    return {"est_precision_end": sum(estimates) / len(estimates) if estimates else math.nan,
            "guard_abstain_share": sum(h["round/guard_abstain"] for h in rounds) / len(rounds),
            "guard_level_abstain_share": sum(withdrawn) / len(withdrawn) if withdrawn else math.nan}


def cap_figures(metrics: dict[str, Any]) -> dict[str, float]:
    """What the removal cap (``detection.max_removed_share``) saw: ``removed_share_end``, the largest share of
    the negatives a level would have removed at the last round (before the cap), and
    ``cap_level_abstain_share``, the share of levels over all rounds it withdrew. NaN for a run without it."""
    rounds = [h for h in metrics.get("history", []) if "round/cap_abstain" in h]
    if not rounds:
        return dict.fromkeys(CAP, math.nan)
    withdrawn = [v for h in rounds for v in level_values(h, "/cap_abstain")]
    return {"removed_share_end": max(level_values(rounds[-1], "/removed_share")), "cap_level_abstain_share": sum(withdrawn) / len(withdrawn)}


def pretrain_row(spec: StudySpec, run_dir: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """A finished pretraining run's detection figures (the guard's and the removal cap's too) and encoder scores."""
    return dict(fn_precision_mean=metrics["fn_precision_mean"], fn_recall_mean=metrics["fn_recall_mean"],
                fn_precision_end=metrics["fn_precision"], fn_recall_end=metrics["fn_recall"],
                **guard_figures(metrics), **cap_figures(metrics), **score_encoder(spec, run_dir))


def run_one(spec: StudySpec, variant: str, seed: int) -> dict[str, Any]:
    """Train (or resume) one run and score it; returns and writes its ``study.json`` row."""
    cfg = spec.config(variant, seed)
    run_dir = spec.run_dir(variant, seed)
    row: dict[str, Any] = {"variant": variant, "seed": seed}
    itm = spec.task == "itm"
    try:
        metrics = itm_train(cfg, resume="auto") if itm else pretrain(cfg, resume="auto")
    except TrainingDiverged as err:  # a diverged run is a result too: recorded, not retried
        log.warning("%s seed %d diverged: %s", variant, seed, err)
        row.update(status="diverged")
    else:
        row.update(status="done", train_time_s=metrics["train_time_s"], **timing_figures(metrics),
                   **(itm_row(run_dir, metrics) if itm else pretrain_row(spec, run_dir, metrics)))
    (run_dir / "study.json").write_text(json.dumps(row, indent=2))
    return row


def check_same_config(spec: StudySpec, variant: str, seed: int) -> None:
    """Refuse a run directory that holds a run of another config (an edited study file, or two study
    files sharing an ``output_dir`` with different settings): its results would be mislabelled. The keys
    a resume may change (:data:`~ifnd.runtime.checkpoint.RESUME_MAY_CHANGE`, e.g. ``cpu_threads``) may
    differ here too."""
    path = spec.run_dir(variant, seed) / "config.yaml"
    if not path.is_file():
        return
    saved, wanted = flatten(read_yaml(path, "run config") or {}), flatten(spec.config(variant, seed).to_dict())
    differ = sorted(key for key in saved.keys() & wanted.keys()  # keys added since: defaults
                    if key not in RESUME_MAY_CHANGE and saved[key] != wanted[key])
    if differ:
        raise ConfigError(f"{path} was written with another config than the study's {variant!r} seed {seed} "
                          f"({', '.join(f'{k}: {saved[k]!r} vs {wanted[k]!r}' for k in differ[:3])}); restore the "
                          f"study file's settings or use a fresh --set output_dir=DIR")


def finished_rows(spec: StudySpec) -> list[dict[str, Any]]:
    """The ``study.json`` row of every run of ``spec`` that has one (status ``done`` or ``diverged``)."""
    paths = (spec.run_dir(variant, seed) / "study.json" for variant, seed in spec.runs())
    return [json.loads(path.read_text()) for path in paths if path.is_file()]


def run_study(spec: StudySpec, only: set[str] | None = None, seeds: set[int] | None = None) -> list[dict[str, Any]]:
    """Run every missing (variant, seed) of ``spec`` (or of the ``only`` variants, and of the ``seeds`` among
    the study's), then write the summary of every finished run of the study (so that processes sharing a
    study by variants or seeds each leave a complete summary).

    Prints which run is next, how many are left and an estimate of the time left (from the
    runs done in this call).
    """
    unknown = sorted((only or set()) - set(spec.variants))
    if unknown:
        raise ConfigError(f"--only names {unknown}, not variants of {spec.path}; its variants are "
                          f"{','.join(spec.variants)}")
    strange = sorted((seeds or set()) - set(spec.seeds))
    if strange:
        raise ConfigError(f"--seeds names {strange}, not seeds of {spec.path} ({list(spec.seeds)}); to run other "
                          "seeds change the study's with --set 'seeds=[...]'")
    for variant, seed in spec.runs():
        check_same_config(spec, variant, seed)
    todo = [(v, s) for v, s in spec.runs() if (only is None or v in only) and (seeds is None or s in seeds)
            and not (spec.run_dir(v, s) / "study.json").is_file()]
    complete = sum((spec.run_dir(v, s) / "study.json").is_file() for v, s in spec.runs())
    print(f"study {spec.path}: {complete} of {len(spec.runs())} runs complete, {len(todo)} to run now "
          f"-> {spec.output_dir}", flush=True)
    durations: list[float] = []
    for done, (variant, seed) in enumerate(todo):
        eta = f", about {sum(durations) / len(durations) * (len(todo) - done) / 60:.0f} min left" if durations else ""
        print(f"[{done + 1}/{len(todo)}] {variant} seed {seed}{eta}", flush=True)
        start = time.perf_counter()
        run_one(spec, variant, seed)
        durations.append(time.perf_counter() - start)
    rows = finished_rows(spec)
    for path in write_summary(spec, rows):
        print(f"wrote {path}", flush=True)
    return rows


def main_study(config: str, overrides: list[str], only: str | None, seeds: str | None = None) -> int:
    """``ifnd study``: run (or continue) a study and print its summary table."""
    spec = StudySpec.load(config, overrides)
    try:
        chosen = {int(seed) for seed in seeds.split(",")} if seeds else None
    except ValueError as err:
        raise ConfigError(f"--seeds {seeds!r}: give comma-separated integers, e.g. --seeds 1,2") from err
    run_study(spec, {name.strip() for name in only.split(",")} if only else None, chosen)
    print((spec.output_dir / "summary.md").read_text())
    return 0
