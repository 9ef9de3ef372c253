"""One process vs ``torchrun --nproc_per_node N`` on the same global batch: speed and agreement.

Runs ``ifnd pretrain`` twice with the same config, seed and global batch: once in one
process with every CPU thread, once as N gloo processes of one thread each (batch split
N ways). Prints a markdown table of images/s, training time, the last loss and kNN
top-1 of each, the throughput ratio, the largest weight difference, and the share of
pseudo-labels the two runs agree on. ``model.norm=group`` makes the encoder independent
of how the batch is split, so the runs differ only by floating-point rounding (the
reductions run in another order); over epochs that drift can move points near a
cluster boundary, which the agreement share shows. Each run's log is in OUT/*/log.txt.

    python tools/compare_ddp.py                      # MoCo v2 + IFND, digits, 2 processes, ~2 min on 2 cores
    python tools/compare_ddp.py --method simclr --set detection.features=bank
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ifnd.train.checkpoint import load_checkpoint  # noqa: E402

BASE = [
    "data.name=digits", "data.image_size=16", "data.num_workers=0", "model.backbone=small_cnn",
    "model.proj_hidden_dim=64", "model.proj_dim=32", "model.norm=group", "moco.queue_size=512", "train.lr=0.3",
    "knn.every=0", "knn.baselines=false", "detection.mode=ifnd", "detection.features=pass",
    "detection.num_clusters=[10, 20]", "detection.accept_start=0.5", "device=cpu",
]


def run(out: Path, nproc: int, batch: int, threads: int, args: argparse.Namespace) -> dict:
    """Train once; returns metrics.json plus the checkpoint's weights and label table."""
    launcher = [sys.executable]
    if nproc > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    sets = [*BASE, f"method={args.method}", f"train.epochs={args.epochs}", f"detection.warmup_epochs={args.detect_warmup}",
            f"data.max_train_samples={args.samples}", f"train.batch_size={batch}", f"output_dir={out}", *args.set]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    out.mkdir(parents=True, exist_ok=True)
    with (out / "log.txt").open("w") as log:
        done = subprocess.run([*launcher, "-m", "ifnd", "pretrain", *(f"--set={s}" for s in sets)], cwd=ROOT, env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    if done.returncode:
        sys.exit(f"training failed (exit {done.returncode}); see {out / 'log.txt'}")
    metrics = json.loads((out / "metrics.json").read_text())
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    return {**metrics, "model": state["model"], "labels": state["detector"]["labels"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--method", default="moco", choices=["moco", "simclr"])
    parser.add_argument("--global-batch", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--detect-warmup", type=int, default=2)
    parser.add_argument("--samples", type=int, default=0, help="training images (0 = all 1,437 digits)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads of the one-process run")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config override")
    parser.add_argument("--out", default="runs/compare_ddp")
    args = parser.parse_args()
    if args.global_batch % args.nproc:
        parser.error(f"--global-batch {args.global_batch} must split evenly over --nproc {args.nproc}")

    out = Path(args.out)
    single = run(out / "single", 1, args.global_batch, args.threads, args)
    multi = run(out / f"ddp{args.nproc}", args.nproc, args.global_batch // args.nproc, 1, args)

    print(f"{args.method}, digits, global batch {args.global_batch}, {args.epochs} epochs, "
          f"IFND from epoch {args.detect_warmup}, {os.cpu_count()} CPU cores\n")
    print("| run | images/s | train time (s) | last loss | kNN top-1 % |\n|---|---|---|---|---|")
    for name, m in ((f"1 process x {args.threads} threads", single), (f"{args.nproc} processes x 1 thread (gloo)", multi)):
        last = m["history"][-1]
        print(f"| {name} | {last['images_per_s']:.0f} | {m['train_time_s']:.1f} | {last['loss']:.4f} | "
              f"{m['knn_top1']:.2f} |")
    speed = multi["history"][-1]["images_per_s"] / single["history"][-1]["images_per_s"]
    diff = max(float((a.float() - multi["model"][k].float()).abs().max()) for k, a in single["model"].items())
    labelled = (single["labels"] >= 0) | (multi["labels"] >= 0)
    agree = float((single["labels"] == multi["labels"])[labelled].float().mean()) if labelled.any() else float("nan")
    print(f"\nthroughput, {args.nproc} processes / 1 process: {speed:.2f}")
    print(f"largest weight difference: {diff:.2e}")
    print(f"pseudo-labels that agree (where either run has one): {agree:.4f}")


if __name__ == "__main__":
    torch.set_num_threads(1)  # this parent only reads the results
    main()
