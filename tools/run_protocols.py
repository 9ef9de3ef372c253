"""Baseline vs IFND on Fashion-MNIST, same budget, every evaluation protocol, one table.

    python tools/run_protocols.py [--out runs/protocols] [--epochs 20] [--samples 10000]
                                  [--backbone small_cnn] [--image-size 28] [--method simclr]
                                  [--lr 0.3] [--knn-every 5] [--warmup 5] [--semisup-epochs 30]
                                  [--workers 2] [--data-root DIR]
                                  [--pretrain-set KEY=VALUE ...] [--ifnd-set KEY=VALUE ...]
                                  [--dry-run]

Pretrains ``OUT/baseline`` (``detection.mode=none``) and ``OUT/ifnd``
(``detection.mode=ifnd``) with identical data, model and schedule (SimCLR temperature
0.2 and LR 0.3 as in ``configs/demo.yaml``); then runs ``linear``, ``knn`` and
``semisup`` at 1% and 10% on each; then prints ``python -m ifnd report`` with plots
in ``OUT/plots``. Every step is a ``python -m ifnd ...`` subprocess (the
real command line), echoed before it runs; ``--dry-run`` only prints them. The
defaults (small CNN, 28 px, 10,000 training images, 20 epochs) are sized for a 2-core
CPU. Fashion-MNIST is read from Debian's ``dataset-fashion-mnist`` or ``--data-root``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]

# Run name -> detection overrides; everything else is shared.
RUNS: dict[str, tuple[str, ...]] = {
    "baseline": ("detection.mode=none",),
    "ifnd": ("detection.mode=ifnd",),
}
FRACTIONS = (0.01, 0.1)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/protocols", help="folder of the two runs and the plots")
    parser.add_argument("--epochs", type=int, default=20, help="pretraining epochs of each run")
    parser.add_argument("--samples", type=int, default=10_000, help="training images (data.max_train_samples; 0 = all 60,000)")
    parser.add_argument("--backbone", default="small_cnn", choices=("small_cnn", "resnet18", "resnet50"))
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--method", default="simclr", choices=("simclr", "moco"))
    parser.add_argument("--lr", type=float, default=0.3, help="pretraining LR for a batch of 256 (configs/demo.yaml's)")
    parser.add_argument("--knn-every", type=int, default=5, help="epochs between kNN monitor points of the curves")
    parser.add_argument("--warmup", type=int, default=5, help="IFND: epochs before the first clustering round")
    parser.add_argument("--semisup-epochs", type=int, default=30, help="fine-tuning epochs of semisup")
    parser.add_argument("--workers", type=int, default=2, help="data loader workers")
    parser.add_argument("--data-root", default="", help="folder with the Fashion-MNIST *-ubyte(.gz) files")
    parser.add_argument("--pretrain-set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra pretraining override for both runs (repeatable)")
    parser.add_argument("--ifnd-set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra pretraining override for the IFND run only, e.g. detection.num_clusters=[10,20]")
    parser.add_argument("--dry-run", action="store_true", help="print the commands without running them")
    return parser.parse_args(argv)


def _ifnd(*words: str) -> list[str]:
    return [sys.executable, "-m", "ifnd", *words]


def _sets(overrides: Sequence[str]) -> list[str]:
    return [word for override in overrides for word in ("--set", override)]


def pretrain_command(args: argparse.Namespace, name: str) -> list[str]:
    """``python -m ifnd pretrain`` of run ``name`` (a key of :data:`RUNS`)."""
    shared = [
        f"output_dir={Path(args.out) / name}", f"method={args.method}",
        "data.name=fashion_mnist", f"data.root={args.data_root}", f"data.image_size={args.image_size}",
        f"data.max_train_samples={args.samples}", f"data.num_workers={args.workers}",
        f"model.backbone={args.backbone}", f"train.epochs={args.epochs}",
        f"train.lr={args.lr}", "simclr.temperature=0.2", f"knn.every={args.knn_every}",
        f"detection.warmup_epochs={args.warmup}", *args.pretrain_set,
    ]
    own = [*RUNS[name], *(args.ifnd_set if name == "ifnd" else ())]
    return _ifnd("pretrain", *_sets([*shared, *own]))


def eval_commands(args: argparse.Namespace, name: str) -> list[list[str]]:
    """linear, knn and semisup (every fraction of :data:`FRACTIONS`) on run ``name``'s last checkpoint."""
    checkpoint = str(Path(args.out) / name / "checkpoints" / "last.pt")
    common = ["--checkpoint", checkpoint, *_sets([f"data.num_workers={args.workers}"])]
    semisup = _sets([f"semisup.epochs={args.semisup_epochs}"])
    return [
        _ifnd("linear", *common),
        _ifnd("knn", *common),
        *(_ifnd("semisup", *common, *semisup, "--fraction", str(f)) for f in FRACTIONS),
    ]


def plan(args: argparse.Namespace) -> list[list[str]]:
    """Every command, in order: both pretrainings, every evaluation, the report."""
    runs = [str(Path(args.out) / name) for name in RUNS]
    return [
        *(pretrain_command(args, name) for name in RUNS),
        *(command for name in RUNS for command in eval_commands(args, name)),
        _ifnd("report", *runs, "--plots", str(Path(args.out) / "plots")),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # `python -m ifnd` must import this checkout from any working directory.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    for command in plan(args):
        print("$ " + shlex.join(command), flush=True)
        if not args.dry_run:
            done = subprocess.run(command, env=env)
            if done.returncode:
                print(f"failed with exit code {done.returncode}: {shlex.join(command)}", file=sys.stderr)
                return done.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
