"""Training throughput of SimCLR and MoCo v2: images/s and peak memory.

Times full optimisation steps (forward of both views, loss, backward, SGD step) on
random images of the given size, so data loading is excluded; compare with the data
pipeline's own rate separately (``--loader``).

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
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ifnd.config import resolve  # noqa: E402
from ifnd.falseneg.detector import FalseNegativeDetector  # noqa: E402
from ifnd.models.contrastive import build_model  # noqa: E402
from ifnd.models.queue import IdQueue  # noqa: E402
from ifnd.train.optim import build_optimizer  # noqa: E402
from ifnd.train.steps import moco_step, simclr_step  # noqa: E402


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def bench_method(method: str, detection: str, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    num_samples, clusters = args.num_samples, [int(k) for k in args.clusters.split(",")]
    cfg = resolve({
        "method": method,
        "model": {"backbone": args.backbone, "cifar_stem": args.stem == "cifar"},
        "moco": {"queue_size": args.queue},
        "train": {"batch_size": args.batch_size},
        "detection": {"mode": detection, "num_clusters": clusters},
    })
    torch.manual_seed(0)
    cuda = device.type == "cuda"
    memory_format = torch.channels_last if cuda else torch.contiguous_format
    model = build_model(cfg).to(device, memory_format=memory_format)
    queue = IdQueue(args.queue, cfg.model.proj_dim).to(device) if method == "moco" else None
    optimizer = build_optimizer(model.parameters(), cfg, lr=0.03)
    detector = FalseNegativeDetector(cfg, num_samples, cfg.model.proj_dim, None)
    if detection == "ifnd":  # a filled table, as after a round
        detector.labels = torch.stack([torch.randint(0, k, (num_samples,)) for k in clusters])
        detector.last_round = 0
    if queue is not None:
        queue.enqueue(torch.nn.functional.normalize(torch.randn(args.queue, cfg.model.proj_dim)).to(device),
                      torch.randint(0, num_samples, (args.queue,)))
    shape = (args.batch_size, 3, args.image_size, args.image_size)
    x1, x2 = (torch.randn(shape, device=device).contiguous(memory_format=memory_format) for _ in range(2))
    amp = cuda
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> None:
        ids = torch.randint(0, num_samples, (args.batch_size,), device=device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = moco_step(model, model, queue, x1, x2, ids, detector, cfg) if queue is not None else \
                simclr_step(model, x1, x2, ids, detector, cfg)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    return {"images_per_s": args.steps * args.batch_size / elapsed, "peak_mb": peak_memory_mb(device)}


def bench_loader(args: argparse.Namespace) -> float:
    """Images/s of the two-view lightly transform through the DataLoader (digits, upsampled)."""
    from ifnd.data.build import build_sources, train_loader
    from ifnd.data.sampler import ResumableSampler
    from ifnd.data.views import IndexedViews, build_view_transform

    cfg = resolve({"data": {"image_size": args.image_size, "num_workers": args.workers}})
    train, _ = build_sources(cfg)
    views = IndexedViews(train, build_view_transform(cfg))
    sampler = ResumableSampler(len(train), args.batch_size)
    start = time.perf_counter()
    n = sum(len(ids) for _, _, ids in train_loader(views, sampler, args.workers, False))
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet18", choices=["small_cnn", "resnet18", "resnet50"])
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--stem", default="cifar", choices=["cifar", "imagenet"],
                        help="ResNet first layer: 3x3 stride 1 (cifar) or 7x7 stride 2 + max-pool (imagenet)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--queue", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--detection", default="none",
                        help="none, ifnd, or none,ifnd (each method both ways, and the time ratio)")
    parser.add_argument("--num-samples", type=int, default=50_000, help="data set size the IFND label table covers")
    parser.add_argument("--clusters", default="100,500,1000", help="k of each IFND granularity")
    parser.add_argument("--methods", default="simclr,moco")
    parser.add_argument("--loader", action="store_true")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    detections = args.detection.split(",")
    if not set(detections) <= {"none", "ifnd"}:
        parser.error(f"--detection takes none, ifnd or none,ifnd; got {args.detection}")
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"device={name} backbone={args.backbone} stem={args.stem} size={args.image_size} batch={args.batch_size} "
          f"queue={args.queue} samples={args.num_samples} clusters={args.clusters} steps={args.steps}\n")
    print("| method | detection | images/s | peak memory (MiB) |\n|---|---|---|---|")
    for method in args.methods.split(","):
        rates = {}
        for detection in detections:
            result = bench_method(method, detection, args, device)
            rates[detection] = result["images_per_s"]
            print(f"| {method} | {detection} | {result['images_per_s']:.1f} | {result['peak_mb']:.0f} |", flush=True)
        if len(rates) == 2:
            print(f"| {method} | step time ifnd / none | {rates['none'] / rates['ifnd']:.3f} | |", flush=True)
    if args.loader:
        print(f"\ndata pipeline (two lightly views, {args.workers} workers): {bench_loader(args):.0f} images/s")


if __name__ == "__main__":
    main()
