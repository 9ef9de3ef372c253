"""configs/imagenet_moco_ifnd.yaml end to end on a generated ImageNet-shaped JPEG folder, under torchrun.

    # CPU, scaled down (the issue's torchrun check): tiny backbone, 2 processes, 1 thread each
    OMP_NUM_THREADS=1 python tools/imagenet_shaped_run.py --nproc 2 --device cpu
    # GPU: MoCo v2 ResNet-50 at 224 px, detection (a round every epoch, kNN monitor, tally) vs plain
    python tools/imagenet_shaped_run.py --device cuda --nproc 1 --backbone resnet50 --image-size 224 \\
        --classes 100 --images-per-class 64 --photo-size 320 --batch-size 64 --epochs 3 --compare-plain

It writes ``ROOT/train/<class>/*.jpg`` and ``ROOT/val/<class>/*.jpg`` (an ImageFolder tree like
ImageNet's; each class has its own colour and stripe pattern under noise, so the kNN monitor
and the pseudo-labels have something to find), then runs ``python -m torch.distributed.run
--nproc_per_node NPROC -m ifnd pretrain --config configs/imagenet_moco_ifnd.yaml`` with the
scale cut down by ``--set`` overrides: the last two epochs start with a clustering round, the
kNN monitor runs every epoch and the detection tally every step. It checks that the run made
its rounds and monitor records and prints, per run, the wall seconds, the epochs' training
seconds (steps and tally) and the rounds' seconds. ``--compare-plain`` also runs
``detection.mode=none`` with the monitor at the end only, and prints the time ratio.
Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def write_tree(root: Path, classes: int, per_class: int, val_per_class: int, size: int, seed: int = 0) -> None:
    """JPEGs of ``size x 3/4 size`` pixels in ``root/train`` and ``root/val``, one folder per class (kept if present)."""
    if (root / "val").is_dir():
        return
    rng = np.random.default_rng(seed)
    height = size * 3 // 4
    for split, count in (("train", per_class), ("val", val_per_class)):
        for c in range(classes):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            colour = np.random.default_rng(c).uniform(40, 215, 3)
            stripes = (np.arange(size) // max(2, 4 + c % 11) % 2)[None, :, None] * 40.0
            for i in range(count):
                pixels = colour + stripes + rng.normal(0, 30, (height, size, 3))
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{i:05d}.jpg", quality=90)


def run(args: argparse.Namespace, name: str, detect: bool) -> dict:
    """One pretraining run; returns its metrics.json plus the wall seconds."""
    out = args.out / name
    rounds_from = max(0, args.epochs - 2)
    sets = {
        "data.root": args.root / "train", "data.test_root": args.root / "val", "device": args.device,
        "output_dir": out, "data.image_size": args.image_size, "data.num_workers": args.workers,
        "model.backbone": args.backbone, "model.sync_bn": args.device == "cuda",
        "model.norm": "batch" if args.device == "cuda" else "group",
        "model.proj_hidden_dim": args.proj_hidden, "moco.queue_size": args.queue, "train.epochs": args.epochs,
        "train.batch_size": args.batch_size, "train.checkpoint_every_steps": 0,
        "knn.every": 1 if detect else 0, "knn.k": 20,
        "detection.mode": "ifnd" if detect else "none", "detection.warmup_epochs": rounds_from,
        "detection.num_clusters": f"[{args.classes}, {2 * args.classes}]",
        "detection.kmeans_backend": args.kmeans_backend,
    }
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(args.nproc),
               "-m", "ifnd", "pretrain", "--config", str(ROOT / "configs" / "imagenet_moco_ifnd.yaml"),
               *(f"--set={key}={value}" for key, value in sets.items()), *(f"--set={s}" for s in args.set)]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{name}: ifnd pretrain failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return {**json.loads((out / "metrics.json").read_text()), "wall_s": wall}


def check(metrics: dict, epochs: int) -> list[str]:
    """What a detecting run must show: 2 rounds, a kNN record every epoch, detection precision after the rounds."""
    history = metrics["history"]
    problems = []
    rounds = [h["epoch"] for h in history if "round/accepted_share" in h]
    if rounds != list(range(max(0, epochs - 2), epochs)):
        problems.append(f"rounds at epochs {rounds}, expected the last two")
    if any("knn_top1" not in h for h in history):
        problems.append("an epoch without a kNN monitor record")
    if any("fn_precision" not in h for h in history if h["epoch"] in rounds):
        problems.append("a detecting epoch without the tally's fn_precision")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("/tmp/ifnd_imagenet_shaped"))
    parser.add_argument("--out", type=Path, default=Path("runs/imagenet_shaped"))
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--images-per-class", type=int, default=24)
    parser.add_argument("--val-per-class", type=int, default=6)
    parser.add_argument("--photo-size", type=int, default=96, help="width of the stored JPEGs (height 3/4 of it)")
    parser.add_argument("--image-size", type=int, default=32, help="data.image_size")
    parser.add_argument("--backbone", default="small_cnn")
    parser.add_argument("--proj-hidden", type=int, default=64)
    parser.add_argument("--queue", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--kmeans-backend", default="auto", choices=("auto", "torch", "faiss"))
    parser.add_argument("--compare-plain", action="store_true")
    parser.add_argument("--set", action="append", default=[], help="more KEY=VALUE overrides")
    args = parser.parse_args()

    write_tree(args.root, args.classes, args.images_per_class, args.val_per_class, args.photo_size)
    print(f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, {args.nproc} x {args.device}, "
          f"{args.classes} classes x {args.images_per_class} images, {args.backbone} at {args.image_size} px")
    results = {"detection": run(args, "detection", True)}
    if args.compare_plain:
        results["plain"] = run(args, "plain", False)
    print("| run | wall s | epochs' training s | rounds s | last kNN top-1 | last fn_precision |")
    print("|---|---|---|---|---|---|")
    for name, metrics in results.items():
        history = metrics["history"]
        rounds = sum(h.get("round/round_time_s", 0.0) for h in history)
        print(f"| {name} | {metrics['wall_s']:.1f} | {sum(h['epoch_time_s'] for h in history):.1f} | {rounds:.1f} | "
              f"{metrics['knn_top1']:.1f} | {metrics['fn_precision']:.3f} |")
    if args.compare_plain:
        print(f"detection/plain wall time ratio {results['detection']['wall_s'] / results['plain']['wall_s']:.3f}")
    problems = check(results["detection"], args.epochs)
    print("checks: " + ("ok" if not problems else "; ".join(problems)))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
