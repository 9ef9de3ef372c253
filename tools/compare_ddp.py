"""One process vs ``torchrun --nproc_per_node N`` on the same global batch: speed and agreement.

Runs ``ifnd pretrain`` twice with the same config, seed and global batch: once in one
process with every CPU thread, once as N gloo processes of one thread each (batch split
N ways). Prints a markdown table of images/s, training time, the last loss and kNN
top-1 of each, the throughput ratio, the largest weight difference, and the share of
pseudo-labels the two runs agree on. ``model.norm=group`` makes the encoder independent
of how the batch is split, so the runs differ only by floating-point rounding (the
reductions run in another order); over epochs that drift can move points near a
cluster boundary, which the agreement share shows. Each run's log is in OUT/*/log.txt.

The settings are an experiment file (``--config``, default
configs/experiments/ddp_cpu.yaml): ``base`` config keys (``train.batch_size`` is the
global batch), ``nproc``, ``threads`` and ``out``; ``--set KEY=VALUE`` applies to both runs.

    python tools/compare_ddp.py                      # MoCo v2 + IFND, digits, 2 processes, ~2 min on 2 cores
    python tools/compare_ddp.py --method simclr --set detection.features=bank
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

import torch

from ifnd.config import add_config_args, format_override, load_experiment
from ifnd.runtime.checkpoint import load_checkpoint

EXPERIMENT = Path(__file__).resolve().parents[1] / "configs" / "experiments" / "ddp_cpu.yaml"
SETTINGS = ("nproc", "threads", "out")
# Shortcut flag -> config key (applied before --set).
SHORTCUTS = {"method": "method", "global_batch": "train.batch_size", "epochs": "train.epochs",
             "detect_warmup": "detection.warmup_epochs", "samples": "data.max_train_samples"}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser, example="detection.features=bank")
    parser.add_argument("--nproc", type=int, help="processes of the torchrun run (default: the file's nproc)")
    parser.add_argument("--method", choices=["moco", "simclr"], help="method")
    parser.add_argument("--global-batch", type=int, help="train.batch_size of the one process, split over --nproc")
    parser.add_argument("--epochs", type=int, help="train.epochs")
    parser.add_argument("--detect-warmup", type=int, help="detection.warmup_epochs")
    parser.add_argument("--samples", type=int, help="data.max_train_samples (0 = all 1,437 digits)")
    parser.add_argument("--threads", type=int, help="threads of the one-process run (default: the file's; 0 = every core)")
    parser.add_argument("--out", help="parent folder of the two runs (default: the file's out)")
    return parser.parse_args(argv)


def run(out: Path, nproc: int, batch: int, threads: int, sets: list[str]) -> dict[str, Any]:
    """Train once; returns metrics.json plus the checkpoint's weights and label table."""
    launcher = [sys.executable]
    if nproc > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    sets = [*sets, f"train.batch_size={batch}", format_override("output_dir", str(out))]
    command = [*launcher, "-m", "ifnd", "pretrain", *(f"--set={s}" for s in sets), "--overwrite"]  # a new measurement
    out.mkdir(parents=True, exist_ok=True)
    print("$ " + shlex.join(command), file=sys.stderr, flush=True)
    with (out / "log.txt").open("w") as log:
        done = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": str(threads)},
                              stdout=log, stderr=subprocess.STDOUT)
    if done.returncode:
        sys.exit(f"training failed (exit {done.returncode}); see {out / 'log.txt'}")
    metrics = json.loads((out / "metrics.json").read_text())
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    return {**metrics, "model": state["model"], "labels": state["detector"]["labels"]}


def images_per_s(metrics: dict[str, Any]) -> float:
    """Throughput of the last epoch (history key ``samples_per_s``)."""
    last = metrics["history"][-1]
    return last["samples_per_s"]


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    experiment = load_experiment(args.config or EXPERIMENT, SETTINGS)
    extra = [*(format_override(key, getattr(args, dest)) for dest, key in SHORTCUTS.items()
               if getattr(args, dest) is not None), *args.overrides]
    cfg = experiment.config(extra)  # validated here, before either run
    sets = [*experiment.base_overrides(), *extra]
    nproc = args.nproc or experiment.settings["nproc"]
    threads = args.threads if args.threads is not None else experiment.settings["threads"]
    threads = threads or os.cpu_count() or 1
    batch = cfg.train.batch_size
    if batch % nproc:
        raise SystemExit(f"the global batch train.batch_size={batch} must split evenly over nproc={nproc}")

    out = Path(args.out or experiment.settings["out"])
    single = run(out / "single", 1, batch, threads, sets)
    multi = run(out / f"ddp{nproc}", nproc, batch // nproc, 1, sets)

    print(f"{cfg.method}, {cfg.data.name}, global batch {batch}, {cfg.train.epochs} epochs, "
          f"detection {cfg.detection.mode} from epoch {cfg.detection.warmup_epochs}, {os.cpu_count()} CPU cores "
          f"({experiment.path.name})\n")
    print("| run | images/s | train time (s) | last loss | kNN top-1 % |\n|---|---|---|---|---|")
    for name, m in ((f"1 process x {threads} threads", single), (f"{nproc} processes x 1 thread (gloo)", multi)):
        last = m["history"][-1]
        print(f"| {name} | {images_per_s(m):.0f} | {m['train_time_s']:.1f} | {last['loss']:.4f} | "
              f"{m['knn_top1']:.2f} |")
    speed = images_per_s(multi) / images_per_s(single)
    diff = max(float((a.float() - multi["model"][k].float()).abs().max()) for k, a in single["model"].items())
    labelled = (single["labels"] >= 0) | (multi["labels"] >= 0)
    agree = float((single["labels"] == multi["labels"])[labelled].float().mean()) if labelled.any() else float("nan")
    print(f"\nthroughput, {nproc} processes / 1 process: {speed:.2f}")
    print(f"largest weight difference: {diff:.2e}")
    print(f"pseudo-labels that agree (where either run has one): {agree:.4f}")


if __name__ == "__main__":
    torch.set_num_threads(1)  # this parent only reads the results
    main()
