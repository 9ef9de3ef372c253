"""FNE vs hardest-negative triplet training on the built-in demo set, same budget and seed.

Trains, from the same initial weights and caption order, the hardest in-batch negative
(VSE++), the hardest negative over batch + memory, and FNE sampling over batch +
memory; evaluates each run's ``best.pt`` (best validation RSUM) on the demo test split
(180 images, 900 captions) and prints a markdown table. "same-class neg." is the share
of chosen negatives (last epoch) showing the anchor's digit: captions of the same digit
often say exactly the same thing, so these are largely false negatives.

The settings are an experiment file (``--config``, default
configs/experiments/fne_demo.yaml): ``base`` image-text matching config keys, ``runs``
(table row -> overrides on top), ``threads`` and ``out``. ``--set KEY=VALUE`` applies
to every run; a run's own keys are applied last.

    python tools/compare_fne.py [--epochs 8] [--image-size 16] [--out runs/compare_fne]

Sized for a few minutes on 2 CPU cores (small_cnn, 16 px).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import torch

from ifnd.config import add_config_args, format_override, load_experiment
from ifnd.itm.evaluate import evaluate_checkpoint
from ifnd.itm.schema import ITM_SCHEMA
from ifnd.itm.train import itm_train
from ifnd.metrics.retrieval import METRIC_KEYS

EXPERIMENT = Path(__file__).resolve().parents[1] / "configs" / "experiments" / "fne_demo.yaml"
SETTINGS = ("runs", "threads", "out")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser, example="negatives.memory_size=4096")
    parser.add_argument("--epochs", type=int,
                        help="train.epochs, and train.lr_decay_epochs two epochs before the end")
    parser.add_argument("--image-size", type=int, help="data.image_size")
    parser.add_argument("--seed", type=int, help="seed")
    parser.add_argument("--out", help="parent folder of the runs (default: the file's out)")
    parser.add_argument("--threads", type=int,
                        help="torch intra-op threads (default: the file's threads; 1 avoids spin-wait stalls "
                             "on a shared, busy CPU)")
    return parser.parse_args(argv)


def shortcut_overrides(args: argparse.Namespace) -> list[str]:
    overrides = []
    if args.epochs is not None:
        overrides += [f"train.epochs={args.epochs}", f"train.lr_decay_epochs=[{max(1, args.epochs - 2)}]"]
    if args.image_size is not None:
        overrides.append(format_override("data.image_size", args.image_size))
    if args.seed is not None:
        overrides.append(format_override("seed", args.seed))
    return overrides


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    experiment = load_experiment(args.config or EXPERIMENT, SETTINGS, schema=ITM_SCHEMA)
    torch.set_num_threads(args.threads or experiment.settings["threads"])
    shared = [*shortcut_overrides(args), *args.overrides]
    out = Path(args.out or experiment.settings["out"])
    configs = [(name, experiment.config([*shared, *overrides, f"output_dir={out / f'run{index}'}"]))
               for index, (name, overrides) in enumerate(experiment.settings["runs"].items())]  # fail early
    rows = []
    for name, cfg in configs:
        history = itm_train(cfg)["history"]
        test, _ = evaluate_checkpoint(Path(cfg.output_dir) / "checkpoints" / "best.pt", "test")
        rows.append((name, test, history[-1].get("same_class_negatives_pct", float("nan")),
                     sum(h["epoch_time_s"] for h in history)))
        print(f"{name}: test RSUM {test['rsum']:.1f}", file=sys.stderr, flush=True)
    cfg = experiment.config(shared)
    print(f"\ndemo set (digits + generated captions), {cfg.model.backbone} {cfg.data.image_size} px, "
          f"{cfg.train.epochs} epochs, batch {cfg.train.batch_size}, memory {cfg.negatives.memory_size}, "
          f"seed {cfg.seed}; test split, best-val checkpoint ({experiment.path.name})\n")
    print("| negatives | R@1 i2t | R@5 i2t | R@10 i2t | R@1 t2i | R@5 t2i | R@10 t2i | RSUM | same-class neg. % | train s |")
    print("|---" * 10 + "|")
    for name, test, same_class, seconds in rows:
        print(f"| {name} | " + " | ".join(f"{test[k]:.1f}" for k in METRIC_KEYS) + f" | {same_class:.1f} | {seconds:.0f} |")
    (out / "summary.json").write_text(json.dumps(
        [{"run": n, **{k: t[k] for k in METRIC_KEYS}, "same_class_negatives_pct": s, "train_time_s": sec}
         for n, t, s, sec in rows], indent=2))


if __name__ == "__main__":
    main()
