"""Baseline vs IFND on Fashion-MNIST, same budget, every evaluation protocol, one table.

    python tools/run_protocols.py [--config configs/experiments/protocols_fashion_mnist.yaml]
                                  [--out runs/protocols] [--set KEY=VALUE ...] [--ifnd-set KEY=VALUE ...]
                                  [--epochs N] [--samples N] [--method moco|simclr] [--warmup N]
                                  [--knn-every N] [--semisup-epochs N] [--workers N] [--data-root DIR]
                                  [--dry-run]

Pretrains one run per entry of the experiment file's ``runs`` (``OUT/baseline`` with
``detection.mode=none``, ``OUT/ifnd`` with ``detection.mode=ifnd``) on its shared
``base`` config: identical data, model and schedule; then runs ``linear``, ``knn``
and ``semisup`` at each of ``fractions`` on each; then prints ``python -m ifnd
report`` with plots in ``OUT/plots``. Every step is a ``python -m ifnd ...``
subprocess (the real command line), echoed before it runs; ``--dry-run`` only prints
them. ``--set`` (alias ``--pretrain-set``) applies to every pretraining, ``--ifnd-set``
to the ``ifnd`` run only; the shortcut flags (``--epochs`` ...) set the config key
named in their help. Fashion-MNIST is read from Debian's ``dataset-fashion-mnist``
or ``--data-root``.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from ifnd.config import Experiment, add_config_args, format_override, load_experiment

EXPERIMENT = Path(__file__).resolve().parents[1] / "configs" / "experiments" / "protocols_fashion_mnist.yaml"
SETTINGS = ("runs", "evaluation", "semisup", "fractions", "out")
# Shortcut flag -> pretraining config key (applied before --set).
SHORTCUTS = {"method": "method", "epochs": "train.epochs", "samples": "data.max_train_samples",
             "backbone": "model.backbone", "image_size": "data.image_size", "lr": "train.lr",
             "knn_every": "knn.every", "warmup": "detection.warmup_epochs", "workers": "data.num_workers",
             "data_root": "data.root"}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser, example="train.epochs=20")
    parser.add_argument("--pretrain-set", dest="overrides", action="append", metavar="KEY=VALUE",
                        help="the same as --set: a pretraining override for every run (repeatable)")
    parser.add_argument("--ifnd-set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra pretraining override for the ifnd run only, e.g. detection.num_clusters=[10,20]")
    parser.add_argument("--out", help="folder of the runs and the plots (default: the file's out)")
    parser.add_argument("--epochs", type=int, help="train.epochs of each run")
    parser.add_argument("--samples", type=int, help="data.max_train_samples (0 = all 60,000)")
    parser.add_argument("--backbone", choices=("small_cnn", "resnet18", "resnet50"), help="model.backbone")
    parser.add_argument("--image-size", type=int, help="data.image_size")
    parser.add_argument("--method", choices=("simclr", "moco"), help="method")
    parser.add_argument("--lr", type=float, help="train.lr (for a batch of 256)")
    parser.add_argument("--knn-every", type=int, help="knn.every: epochs between kNN monitor points of the curves")
    parser.add_argument("--warmup", type=int, help="detection.warmup_epochs: epochs before the first clustering round")
    parser.add_argument("--semisup-epochs", type=int, help="semisup.epochs of the fine-tuning")
    parser.add_argument("--workers", type=int, help="data.num_workers, of the pretrainings and the evaluations")
    parser.add_argument("--data-root", help="data.root: folder with the Fashion-MNIST *-ubyte(.gz) files")
    parser.add_argument("--dry-run", action="store_true", help="print the commands without running them")
    return parser.parse_args(argv)


def _ifnd(*words: str) -> list[str]:
    return [sys.executable, "-m", "ifnd", *words]


def _sets(overrides: Sequence[str]) -> list[str]:
    return [word for override in overrides for word in ("--set", override)]


def pretrain_command(args: argparse.Namespace, experiment: Experiment, name: str) -> list[str]:
    """``python -m ifnd pretrain`` of run ``name`` (a key of the file's ``runs``), validated here."""
    shortcuts = [format_override(key, getattr(args, dest)) for dest, key in SHORTCUTS.items()
                 if getattr(args, dest) is not None]
    own = [*experiment.settings["runs"][name], *(args.ifnd_set if name == "ifnd" else ())]
    extra = [*shortcuts, *args.overrides, *own, format_override("output_dir", str(_out(args, experiment) / name))]
    experiment.config(extra)  # a bad key fails before anything runs
    return _ifnd("pretrain", *_sets([*experiment.base_overrides(), *extra]), "--resume", "auto")  # a rerun continues


def eval_commands(args: argparse.Namespace, experiment: Experiment, name: str) -> list[list[str]]:
    """linear, knn and semisup (every one of the file's ``fractions``) on run ``name``'s last checkpoint."""
    checkpoint = str(_out(args, experiment) / name / "checkpoints" / "last.pt")
    evaluation = [*experiment.settings["evaluation"],
                  *([f"data.num_workers={args.workers}"] if args.workers is not None else [])]
    semisup = [*experiment.settings["semisup"],
               *([f"semisup.epochs={args.semisup_epochs}"] if args.semisup_epochs is not None else [])]
    common = ["--checkpoint", checkpoint, *_sets(evaluation)]
    resume = ["--resume", "auto"]  # a rerun continues (or rereads) the evaluations that train
    return [
        _ifnd("linear", *common, *resume),
        _ifnd("knn", *common),
        *(_ifnd("semisup", *common, *_sets(semisup), "--fraction", str(f), *resume)
          for f in experiment.settings["fractions"]),
    ]


def _out(args: argparse.Namespace, experiment: Experiment) -> Path:
    return Path(args.out or experiment.settings["out"])


def plan(args: argparse.Namespace) -> list[list[str]]:
    """Every command, in order: every pretraining, every evaluation, the report."""
    experiment = load_experiment(args.config or EXPERIMENT, SETTINGS)
    names = list(experiment.settings["runs"])
    out = _out(args, experiment)
    return [
        *(pretrain_command(args, experiment, name) for name in names),
        *(command for name in names for command in eval_commands(args, experiment, name)),
        _ifnd("report", *(str(out / name) for name in names), "--plots", str(out / "plots")),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for command in plan(args):
        print("$ " + shlex.join(command), flush=True)
        if not args.dry_run:
            done = subprocess.run(command)
            if done.returncode:
                print(f"failed with exit code {done.returncode}: {shlex.join(command)}", file=sys.stderr)
                return done.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
