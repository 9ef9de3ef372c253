"""Training throughput of SimCLR and MoCo v2: images/s and peak memory.

Times full optimisation steps (forward of both views, loss, backward, SGD step) on
random images of the given size, so data loading is excluded; compare with the data
pipeline's own rate separately (``--loader``). With several detections or objectives the
variants run in turn, step by step (the order reversed every round), and each one's median step
time is reported with its ratio to the plain step (detection none, objective infonce), so that
the ratio holds on a shared machine. A detection runs as after its warm-up: IFND with a random
full label table, ``threshold`` learning its thresholds, FNC embedding its support views (random
images; the extra augmentation they cost the data pipeline is not in the step). The peers'
objectives run without detection.

The settings are an experiment file (``--config``, default
configs/experiments/bench_pretrain.yaml): ``base`` config keys (backbone, stem, image
size, batch, queue, the IFND levels, device), and the tool's own keys (methods,
detections, num_samples, steps, warmup, lr, loader). ``--set KEY=VALUE`` changes a
config key; the other flags override the file.

    python tools/bench_pretrain.py                       # ResNet-18, 32 px, batch 256
    python tools/bench_pretrain.py --backbone small_cnn --image-size 28
    python tools/bench_pretrain.py --detection none,ifnd # also with a 3-level label table, and the ratio
    # ImageNet-sized MoCo v2 on a GPU (bf16 autocast and channels_last, as in training):
    python tools/bench_pretrain.py --backbone resnet50 --image-size 224 --stem imagenet --methods moco \
        --queue 65536 --steps 200 --warmup 20 --detection none,ifnd --num-samples 1281167 --clusters 25000,50000,100000
    python tools/bench_pretrain.py --loader              # also the lightly transform + loader rate
"""

from __future__ import annotations

import argparse
import math
import resource
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ifnd.config import add_config_args, format_override, load_experiment
from ifnd.falseneg.detectors import DETECTORS, build_detector
from ifnd.objectives import OBJECTIVES
from ifnd.pretrain.methods import METHODS, build_method
from ifnd.pretrain.optim import build_optimizer
from ifnd.runtime.distributed import pick_device
from ifnd.runtime.timing import interleaved_median_times

EXPERIMENT = Path(__file__).resolve().parents[1] / "configs" / "experiments" / "bench_pretrain.yaml"
SETTINGS = ("methods", "detections", "objectives", "num_samples", "steps", "warmup", "lr", "loader")
LABELLED = ("oracle", "noisy_oracle")  # detections that read true labels: bounds, with no cost of their own to time


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def build_step(cfg: Any, args: argparse.Namespace, device: torch.device) -> Callable[[], None]:
    """One full optimisation step of ``cfg.method`` with ``cfg.detection.mode`` and ``cfg.objective.name`` on fixed
    random images (MoCo's queue holds its random starting keys; a detector with a table gets a random full one, as
    after a round; every detector steps in the epoch its warm-up ends, with random support views where it has
    them)."""
    num_samples, clusters, batch, size = args.num_samples, cfg.detection.num_clusters, cfg.train.batch_size, cfg.data.image_size
    torch.manual_seed(0)
    cuda = device.type == "cuda"
    memory_format = torch.channels_last if cuda else torch.contiguous_format
    method = build_method(cfg, device)
    model = method.build_model(cfg).to(device, memory_format=memory_format)
    optimizer = build_optimizer(model.parameters(), cfg, lr=args.lr)
    detector = build_detector(cfg, num_samples, cfg.model.proj_dim, None)
    table = detector.table_state()
    if "labels" in table:
        labels = torch.stack([torch.randint(0, k, (num_samples,)) for k in clusters])
        detector.load_table({**table, "labels": labels, "last_round": 0})
    epoch = cfg.detection.warmup_epochs
    detector.start_epoch(epoch)
    shape = (batch, 3, size, size)
    x1, x2 = (torch.randn(shape, device=device).contiguous(memory_format=memory_format) for _ in range(2))
    support = (torch.randn(batch, detector.support_views, 3, size, size, device=device)
               if detector.support_views else None)  # [B, S, 3, H, W]

    def step() -> None:
        ids = torch.randint(0, num_samples, (batch,), device=device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            out = method.step(model, model, x1, x2, ids, detector, epoch, 0, support)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        if cuda:
            torch.cuda.synchronize()

    return step


def bench_loader(cfg: Any) -> float:
    """Images/s of the two-view lightly transform through the DataLoader (``data.name``, upsampled)."""
    from ifnd.data.build import build_sources, train_loader
    from ifnd.data.views import IndexedViews, build_view_transform
    from ifnd.pretrain.methods import method_class
    from ifnd.runtime.sampler import ResumableSampler

    train, _ = build_sources(cfg)
    views = IndexedViews(train, build_view_transform(cfg, method_class(cfg).transform))
    sampler = ResumableSampler(len(train), cfg.train.batch_size)
    start = time.perf_counter()
    n = sum(len(ids) for _, _, ids in train_loader(views, sampler, cfg.data.num_workers, False))
    return n / (time.perf_counter() - start)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser, example="model.backbone=small_cnn")
    config_flag = "a shortcut for --set "
    parser.add_argument("--backbone", choices=["small_cnn", "resnet18", "resnet50"], help=config_flag + "model.backbone")
    parser.add_argument("--image-size", type=int, help=config_flag + "data.image_size")
    parser.add_argument("--stem", choices=["cifar", "imagenet"],
                        help="ResNet first layer: 3x3 stride 1 (cifar) or 7x7 stride 2 + max-pool (imagenet); "
                             + config_flag + "model.cifar_stem")
    parser.add_argument("--batch-size", type=int, help=config_flag + "train.batch_size")
    parser.add_argument("--queue", type=int, help=config_flag + "moco.queue_size")
    parser.add_argument("--clusters", help="k of each IFND granularity, comma-separated; " + config_flag + "detection.num_clusters")
    parser.add_argument("--workers", type=int, help=config_flag + "data.num_workers (--loader only)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help=config_flag + "device")
    parser.add_argument("--methods", help="comma-separated: simclr, moco")
    parser.add_argument("--detection", dest="detections",
                        help="comma-separated detection modes, e.g. none,ifnd,threshold,fnc (with none: each one's time ratio)")
    parser.add_argument("--objective", dest="objectives",
                        help="comma-separated objectives, run without detection, e.g. infonce,debiased,hard_negatives,decoupled")
    parser.add_argument("--num-samples", type=int, help="data set size the IFND label table covers")
    parser.add_argument("--steps", type=int, help="timed steps")
    parser.add_argument("--warmup", type=int, help="untimed steps first")
    parser.add_argument("--lr", type=float, help="SGD learning rate of the steps")
    parser.add_argument("--loader", action="store_true", default=None, help="also the lightly transform + loader rate")
    return parser.parse_args(argv)


def shortcut_overrides(args: argparse.Namespace) -> list[str]:
    """The config-key flags as ``key=value`` overrides (applied before ``--set``)."""
    values = {"model.backbone": args.backbone, "data.image_size": args.image_size, "train.batch_size": args.batch_size,
              "moco.queue_size": args.queue, "data.num_workers": args.workers, "device": args.device,
              "model.cifar_stem": None if args.stem is None else args.stem == "cifar",
              "detection.num_clusters": None if args.clusters is None else [int(k) for k in args.clusters.split(",")]}
    return [format_override(key, value) for key, value in values.items() if value is not None]


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    experiment = load_experiment(args.config or EXPERIMENT, SETTINGS)
    overrides = [*shortcut_overrides(args), *args.overrides]
    cfg = experiment.config(overrides)
    for key in SETTINGS:  # a flag overrides the file
        if getattr(args, key) is None:
            setattr(args, key, experiment.settings[key])
    methods, detections, objectives = (value.split(",") if isinstance(value, str) else list(value)
                                       for value in (args.methods, args.detections, args.objectives))
    timed_detections = sorted(set(DETECTORS) - set(LABELLED))
    if not set(detections) <= set(timed_detections) or not set(objectives) <= set(OBJECTIVES) \
            or not set(methods) <= set(METHODS):
        raise SystemExit(f"methods take {', '.join(METHODS)}, detections {', '.join(timed_detections)} and objectives "
                         f"{', '.join(OBJECTIVES)}; got {methods}, {detections} and {objectives}")
    # (detection, objective): every detection with InfoNCE, every other objective without detection
    variants = [*((d, "infonce") for d in detections), *(("none", o) for o in objectives if o != "infonce")]
    device = pick_device(cfg.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"device={name} backbone={cfg.model.backbone} stem={'cifar' if cfg.model.cifar_stem else 'imagenet'} "
          f"size={cfg.data.image_size} batch={cfg.train.batch_size} queue={cfg.moco.queue_size} "
          f"samples={args.num_samples} clusters={','.join(map(str, cfg.detection.num_clusters))} steps={args.steps} "
          f"({experiment.path.name})\n")
    print("| method | detection | objective | images/s (median step) | step time / plain step | peak memory (MiB) |\n"
          "|---|---|---|---|---|---|")
    for method in methods:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        steps = {(detection, objective): build_step(experiment.config(
                     [*overrides, f"method={method}", f"detection.mode={detection}", f"objective.name={objective}"]),
                     args, device) for detection, objective in variants}
        seconds = interleaved_median_times(steps, args.steps, args.warmup)
        plain = seconds.get(("none", "infonce"), math.nan)
        for (detection, objective), time_s in seconds.items():  # peak memory: the process's (interleaved variants)
            print(f"| {method} | {detection} | {objective} | {cfg.train.batch_size / time_s:.1f} | "
                  f"{time_s / plain:.3f} | {peak_memory_mb(device):.0f} |", flush=True)
    if args.loader:
        print(f"\ndata pipeline (two lightly views, {cfg.data.num_workers} workers): {bench_loader(cfg):.0f} images/s")


if __name__ == "__main__":
    main()
