"""``itm-train`` and ``itm-eval`` subcommands; :func:`add_subcommands` plugs them into a parser."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ifnd.config import add_config_args
from ifnd.metrics.retrieval import METRIC_KEYS
from ifnd.runtime.run import add_overwrite_arg


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def format_metrics_table(rows: list[tuple[str, dict[str, Any]]]) -> str:
    """Markdown table of R@K and RSUM, one row per ``(name, metrics)``."""
    header = "| " + " | ".join(["model", "R@1 i2t", "R@5 i2t", "R@10 i2t", "R@1 t2i", "R@5 t2i", "R@10 t2i", "RSUM"]) + " |"
    lines = [header, "|" + "---|" * (len(METRIC_KEYS) + 1)]
    for name, metrics in rows:
        lines.append(f"| {name} | " + " | ".join(f"{metrics[k]:.1f}" for k in METRIC_KEYS) + " |")
    return "\n".join(lines)


def cmd_itm_train(args: argparse.Namespace) -> int:
    from ifnd.config import load_config
    from ifnd.itm.data import validation_split
    from ifnd.itm.schema import ITM_SCHEMA
    from ifnd.itm.train import itm_train
    from ifnd.runtime import distributed as dist

    cfg = load_config(args.config, args.overrides, schema=ITM_SCHEMA)
    metrics = itm_train(cfg, resume=args.resume, overwrite=args.overwrite)
    if not dist.is_main():
        return 0
    print(f"\nrun: {cfg.output_dir}  sampler={cfg.negatives.sampler}  memory={cfg.negatives.use_memory}  "
          f"epochs={metrics['epochs_done']}  train time={metrics['train_time_s']:.0f}s")
    if metrics["val"]:
        print(format_metrics_table([(f"{validation_split(cfg)} (last epoch)", metrics["val"])]))
    return 0


def cmd_itm_eval(args: argparse.Namespace) -> int:
    from ifnd.itm.evaluate import evaluate_checkpoint
    from ifnd.runtime.distributed import pick_device

    metrics, path = evaluate_checkpoint(args.checkpoint, args.split, args.folds, args.overrides, pick_device(args.device))
    rows = [(f"{args.split}, {args.folds}-fold mean" if args.folds > 1 else args.split, metrics)]
    if args.folds > 1:
        rows.append((f"{args.split}, full set", metrics["full"]))
    print(format_metrics_table(rows))
    print(json.dumps({k: round(metrics[k], 2) for k in METRIC_KEYS}))
    print(f"written: {path}")
    return 0


def add_subcommands(sub: Any) -> None:
    """Add ``itm-train`` and ``itm-eval`` to an ``argparse`` subparsers object (func(args) -> exit code)."""
    p = sub.add_parser("itm-train", help="train image-text matching (FNE or hardest-negative triplet loss)")
    add_config_args(p, example="negatives.sampler=hardest")
    p.add_argument("--resume", help="'auto' (last checkpoint of the run directory) or a checkpoint path")
    add_overwrite_arg(p)
    p.set_defaults(func=cmd_itm_train)
    p = sub.add_parser("itm-eval", help="R@1/5/10 and RSUM of an itm-train checkpoint")
    p.add_argument("--checkpoint", required=True, help="e.g. runs/itm_demo/checkpoints/best.pt")
    p.add_argument("--split", default="test",
                   help="split to evaluate (default: test; SCAN's COCO layout: testall, with --folds 5 for the 1K protocol)")
    p.add_argument("--folds", type=_positive_int, default=1,
                   help="also report the mean over this many contiguous image folds (5 = COCO 5-fold 1K)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a stored config key, e.g. --set data.root=/new/place; --set output_dir=DIR "
                        "writes DIR/metrics.json (repeatable)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where to embed (auto: cuda when available)")
    p.set_defaults(func=cmd_itm_eval)
