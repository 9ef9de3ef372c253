"""Baseline vs IFND (elimination, attraction) vs oracle, same seed and budget.

Every variant trains the same encoder with the same seed, data order and
augmentations; only ``detection.*`` differs. Prints a markdown table of kNN top-1 and
the last epoch's false-negative precision / recall, and the cost of detection as epoch
time ratios over the baseline (``bank`` features, and ``pass`` features).

The settings are an experiment file (``--config``; default
configs/experiments/detection_<--data>.yaml): ``base`` config keys shared by every
variant, ``variants`` (name -> overrides on top) and ``out``. ``--set KEY=VALUE``
applies to every variant; a variant's own keys are applied last.

    python tools/compare_detection.py                                      # digits, ~15 min on 2 cores
    python tools/compare_detection.py --config configs/experiments/detection_fashion_mnist.yaml
    python tools/compare_detection.py --data fashion_mnist --set train.epochs=20 \\
        --set detection.warmup_epochs=5 --variants baseline,ifnd-elimination-pass,oracle-elimination
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any, Sequence

from ifnd.config import add_config_args, format_override, load_experiment
from ifnd.pretrain.task import pretrain

EXPERIMENTS = Path(__file__).resolve().parents[1] / "configs" / "experiments"
SETTINGS = ("variants", "out")
# Shortcut flag -> config key (applied before --set).
SHORTCUTS = {"samples": "data.max_train_samples", "epochs": "train.epochs",
             "detect_warmup": "detection.warmup_epochs", "clusters": "detection.num_clusters"}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser, example="train.epochs=20")
    parser.add_argument("--data", default="digits", choices=["digits", "fashion_mnist"],
                        help="without --config: read configs/experiments/detection_<DATA>.yaml")
    parser.add_argument("--samples", type=int, help="data.max_train_samples (0 = all)")
    parser.add_argument("--epochs", type=int, help="train.epochs")
    parser.add_argument("--detect-warmup", type=int, help="detection.warmup_epochs")
    parser.add_argument("--clusters", type=int, nargs="+", help="detection.num_clusters")
    parser.add_argument("--variants", help="comma-separated subset of the file's variants (default: all, in order)")
    parser.add_argument("--out", help="parent folder of the runs (default: the file's out)")
    return parser.parse_args(argv)


def run_variant(name: str, cfg: Any) -> dict:
    start = time.perf_counter()
    metrics = pretrain(cfg)
    detected_epochs = [h["epoch_time_s"] for h in metrics["history"] if h["epoch"] >= cfg.detection.warmup_epochs]
    rounds = [h["round/round_time_s"] for h in metrics["history"] if "round/round_time_s" in h]
    return {
        "name": name,
        "knn_top1": metrics["knn_top1"],
        "fn_precision": metrics["fn_precision"],
        "fn_recall": metrics["fn_recall"],
        "epoch_time_s": statistics.median(detected_epochs) if detected_epochs else float("nan"),
        "round_time_s": statistics.median(rounds) if rounds else 0.0,
        "wall_s": time.perf_counter() - start,
    }


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    experiment = load_experiment(args.config or EXPERIMENTS / f"detection_{args.data}.yaml", SETTINGS)
    variants: dict[str, list[str]] = experiment.settings["variants"]
    names = args.variants.split(",") if args.variants else list(variants)
    unknown = [n for n in names if n not in variants]
    if unknown:
        raise SystemExit(f"unknown --variants {unknown}; {experiment.path} has {', '.join(variants)}")
    shared = [format_override(key, getattr(args, dest)) for dest, key in SHORTCUTS.items()
              if getattr(args, dest) is not None] + args.overrides
    out = Path(args.out or experiment.settings["out"])
    configs = {n: experiment.config([*shared, *variants[n], f"output_dir={out / n}"]) for n in names}  # fail early

    results = []
    for name, cfg in configs.items():
        results.append(run_variant(name, cfg))
        print(json.dumps(results[-1]), flush=True)
    cfg = experiment.config(shared)
    print(f"\n{cfg.data.name} ({cfg.data.max_train_samples or 'all'} samples), {cfg.method}, {cfg.model.backbone} "
          f"{cfg.data.image_size}px, {cfg.train.epochs} epochs, detection from epoch {cfg.detection.warmup_epochs}, "
          f"k={cfg.detection.num_clusters}, seed {cfg.seed} ({experiment.path.name})\n")
    print("| variant | kNN top-1 % | FN precision | FN recall | epoch time (s) | round time (s) |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['name']} | {r['knn_top1']:.2f} | {r['fn_precision']:.3f} | {r['fn_recall']:.3f} | "
              f"{r['epoch_time_s']:.2f} | {r['round_time_s']:.2f} |")
    by_name = {r["name"]: r for r in results}
    if "baseline" in by_name:
        base = by_name["baseline"]["epoch_time_s"]
        for name in ("ifnd-elimination", "ifnd-elimination-pass"):
            if name in by_name:
                r = by_name[name]
                print(f"\nepoch time {name} / baseline: {r['epoch_time_s'] / base:.3f} "
                      f"(with its clustering round amortised: {(r['epoch_time_s'] + r['round_time_s']) / base:.3f})")
        if "ifnd-elimination" in by_name and "oracle-elimination" in by_name:
            b, i, o = (by_name[n]["knn_top1"] for n in ("baseline", "ifnd-elimination", "oracle-elimination"))
            print(f"\nIFND beats the baseline: {i > b} ({i - b:+.2f} points); oracle bounds IFND: {o >= i} ({o - i:+.2f})")


if __name__ == "__main__":
    main()
