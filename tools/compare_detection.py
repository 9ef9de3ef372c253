"""Baseline vs IFND (elimination, attraction) vs oracle, same seed and budget.

Every variant trains the same encoder with the same seed, data order and
augmentations; only ``detection.*`` differs. Prints a markdown table of kNN top-1 and
the last epoch's false-negative precision / recall, and the cost of detection as epoch
time ratios over the baseline (``bank`` features, and ``pass`` features).

    python tools/compare_detection.py --data digits                       # ~15 min on 2 cores
    python tools/compare_detection.py --data fashion_mnist --samples 10000 --epochs 20
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ifnd.config import resolve  # noqa: E402
from ifnd.train.pretrain import Trainer  # noqa: E402

VARIANTS = {
    "baseline": {"mode": "none"},
    "ifnd-elimination": {"mode": "ifnd", "loss": "elimination", "features": "bank"},
    "ifnd-attraction": {"mode": "ifnd", "loss": "attraction", "features": "bank"},
    "oracle-elimination": {"mode": "oracle", "loss": "elimination"},
    "ifnd-elimination-pass": {"mode": "ifnd", "loss": "elimination", "features": "pass"},
}


def base_config(args: argparse.Namespace) -> dict:
    return {
        "method": args.method,
        "seed": args.seed,
        "device": args.device,
        "data": {"name": args.data, "image_size": args.image_size, "num_workers": args.workers,
                 "max_train_samples": args.samples},
        "augment": {"min_scale": 0.3, "cj_strength": 0.5},
        "model": {"backbone": args.backbone, "proj_hidden_dim": 256, "proj_dim": 64},
        "moco": {"queue_size": args.queue, "temperature": 0.2, "momentum": 0.99},
        "simclr": {"temperature": 0.2},
        "train": {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "warmup_epochs": 1},
        "knn": {"every": 0, "k": 20},
        "detection": {"num_clusters": args.clusters, "warmup_epochs": args.detect_warmup, "cluster_every": 1,
                      "accept_start": args.accept_start, "accept_end": args.accept_end},
    }


def run_variant(name: str, args: argparse.Namespace) -> dict:
    values = base_config(args)
    values["output_dir"] = str(Path(args.out) / name)
    values["detection"].update(VARIANTS[name])
    start = time.perf_counter()
    metrics = Trainer(resolve(values)).fit()
    detected_epochs = [h["epoch_time_s"] for h in metrics["history"] if h["epoch"] >= args.detect_warmup]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="digits", choices=["digits", "fashion_mnist"])
    parser.add_argument("--method", default="moco", choices=["simclr", "moco"])
    parser.add_argument("--samples", type=int, default=0, help="training subset size (0 = all)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--detect-warmup", type=int, default=10)
    parser.add_argument("--clusters", type=int, nargs="+", default=[10, 20])
    parser.add_argument("--accept-start", type=float, default=0.2)
    parser.add_argument("--accept-end", type=float, default=0.8)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.3)
    parser.add_argument("--queue", type=int, default=1024)
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--backbone", default="small_cnn")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", default="runs/compare_detection")
    args = parser.parse_args()

    results = []
    for name in args.variants.split(","):
        results.append(run_variant(name, args))
        print(json.dumps(results[-1]), flush=True)
    print(f"\n{args.data} ({args.samples or 'all'} samples), {args.method}, {args.backbone} {args.image_size}px, "
          f"{args.epochs} epochs, detection from epoch {args.detect_warmup}, k={args.clusters}, seed {args.seed}\n")
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
