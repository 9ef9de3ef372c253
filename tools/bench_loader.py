"""CPU cost per image of the training views: decode, today's CPU path, the fast path's CPU side.

    python tools/bench_loader.py --root /tmp/jpegs --generate 300      # 500 x 375 JPEGs, quality 90
    python tools/bench_loader.py --root /data/imagenet/train --images 2000 --compare

The views are those of ``--config`` (default configs/imagenet_moco_ifnd.yaml: MoCo v2 at 224 px,
blur 0.5). Each row is measured through our loader with one worker process (``train_loader``,
batch 32): the worker's CPU time per image (``getrusage`` of the exited worker, so other jobs on the
machine inflate it less than wall time; the slope between two pass lengths, so the worker's start
is left out), and images/s per core = 1000 / ms. Decode is PIL's open + RGB
convert (and the fast path's header read and simplejpeg decode) in the main process, the median of per-image CPU times. The device side (the batched
augmentation of both views, ``augment.device=cuda``) is timed on CUDA when present, else on the
CPU and labelled so. ``--compare`` times the colour jitter and blur of one view per image with
kornia on the whole batch (our device side) against torchvision.transforms.v2, which takes one
factor per call and so runs per sample. The last line is the CPU-side speed-up of the fast path.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ifnd.config import load_config  # noqa: E402
from ifnd.data.build import build_sources, train_loader  # noqa: E402
from ifnd.data.device_augment import NUM_PARAMS, DeviceAugment, ViewSpec, draw_params  # noqa: E402
from ifnd.data.fast_views import build_train_views, decode_jpeg, jpeg_size  # noqa: E402
from ifnd.pretrain.methods import method_class  # noqa: E402
from ifnd.runtime.sampler import ResumableSampler  # noqa: E402


def generate(root: Path, count: int, size: tuple[int, int] = (500, 375), classes: int = 4) -> None:
    """``count`` ImageNet-like JPEGs (quality 90, about 75 KB): smooth colour fields with fine texture."""
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = root / f"class{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i:06d}.jpg"
        if path.exists():
            continue
        base = np.asarray(Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize(size, Image.BICUBIC))
        texture = rng.normal(0, 12, (size[1], size[0], 1))
        Image.fromarray((base + texture).clip(0, 255).astype(np.uint8)).save(path, quality=90)


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _epoch(dataset: torch.utils.data.Dataset, n: int, batch: int) -> tuple[float, float]:
    """``(worker CPU s, wall s)`` of one pass over the first ``n`` samples with one loader worker."""
    sampler = ResumableSampler(n, batch, seed=0)
    before, start = children_cpu_s(), time.perf_counter()
    for _ in train_loader(dataset, sampler, 1, False):
        pass
    return children_cpu_s() - before, time.perf_counter() - start


def loader_cpu_ms(dataset: torch.utils.data.Dataset, n: int, batch: int = 32) -> tuple[float, float]:
    """``(worker CPU ms per image, wall images/s)`` through our loader with one worker.

    The CPU cost is the slope between a pass over ``n`` and one over ``n / 4`` images: the
    worker's start and exit (forking a large parent) are left out, as in an epoch of thousands.
    """
    small = max(batch, n // 4 // batch * batch)
    cpu_small, _ = _epoch(dataset, small, batch)
    cpu_n, wall_n = _epoch(dataset, n, batch)
    return 1000 * (cpu_n - cpu_small) / (n // batch * batch - small), n // batch * batch / wall_n


def decode_ms(paths: list[Path], fast: bool) -> float:
    """Median CPU ms of a full-size RGB decode: PIL's open + convert, or (``fast``) the fast path's read, header
    and simplejpeg decode (:func:`~ifnd.data.fast_views.jpeg_size`, :func:`~ifnd.data.fast_views.decode_jpeg`)."""
    times = []
    for path in paths:
        start = time.process_time()
        data = path.read_bytes() if fast else b""
        size = jpeg_size(data) if fast else None
        if size is not None:
            decode_jpeg(data, *size, 1)
        else:  # PIL (the fast path's too, for what simplejpeg does not take)
            with Image.open(path) as image:
                image.convert("RGB")
        times.append(1000 * (time.process_time() - start))
    return statistics.median(times)


def device_side(spec: ViewSpec, batch: int, repeats: int) -> tuple[float, str]:
    """Images/s (both views) of :class:`DeviceAugment` on random uint8 batches; and where it ran."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    augment = DeviceAugment(spec)
    rng = np.random.default_rng(0)
    images = torch.randint(0, 256, (batch, 3, spec.size, spec.size), dtype=torch.uint8, device=device)
    params = torch.from_numpy(draw_params(rng, spec, batch)).to(device)
    times = []
    for _ in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        augment(images, params), augment(images, params)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    label = torch.cuda.get_device_name(0) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} thread(s)"
    return batch / statistics.median(times[1:]), label


def compare_libraries(spec: ViewSpec, batch: int, repeats: int) -> list[tuple[str, float]]:
    """ms per image of colour jitter (all four, random order) and blur: kornia batched vs torchvision v2 per sample."""
    import torchvision.transforms.v2.functional as TF

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rng = np.random.default_rng(0)
    params = torch.from_numpy(draw_params(rng, spec, batch))
    params[:, 1], params[:, 10], params[:, 11], params[:, 13] = 1, 0, 1, 0  # jitter and blur on every sample
    images = torch.randint(0, 256, (batch, 3, spec.size, spec.size), dtype=torch.uint8, device=device)
    augment = DeviceAugment(ViewSpec(**{**spec.__dict__, "normalize": False}))
    kernel = augment.kernel
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    host = params.tolist()

    def torchvision_v2() -> None:
        for i in range(batch):
            x, p = images[i].float() / 255, host[i]
            for op_id in map(int, p[6:10]):
                x = ops[op_id](x, p[2 + op_id])
            TF.gaussian_blur(x, [kernel, kernel], [p[12], p[12]])

    def kornia_batched() -> None:
        augment(images, params.to(device))

    rows = []
    for name, fn in (("kornia, batched (chosen)", kornia_batched), ("torchvision.transforms.v2, per sample", torchvision_v2)):
        times = []
        for _ in range(repeats + 1):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        rows.append((f"{name} on {device.type}", 1000 * statistics.median(times[1:]) / batch))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="image folder (root/class_x/img.jpg)")
    parser.add_argument("--generate", type=int, default=0, help="first write N generated 500x375 JPEGs into --root")
    parser.add_argument("--config", default="configs/imagenet_moco_ifnd.yaml", help="pretraining config of the views")
    parser.add_argument("--images", type=int, default=256, help="images per loader measurement")
    parser.add_argument("--batch", type=int, default=256, help="device side: batch size")
    parser.add_argument("--repeats", type=int, default=5, help="device side: timed repeats (median)")
    parser.add_argument("--compare", action="store_true", help="also time kornia against torchvision.transforms.v2")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    root = Path(args.root)
    if args.generate:
        generate(root, args.generate)
    # a fresh folder index each run (a reused one would miss new files), removed afterwards
    with tempfile.TemporaryDirectory(prefix="bench_loader_") as out:
        base = [f"output_dir={out}", f"data.root={root}", "data.test_root=", "knn.every=0"]
        cpu_cfg = load_config(args.config, [*base, "augment.device=cpu"])
        fast_cfg = load_config(args.config, [*base, "augment.device=cuda"])
        source, _ = build_sources(cpu_cfg)
        n = min(args.images, len(source))
        if n < 64:  # the loader's cost is a slope between a pass over n and one over n / 4 images
            parser.error(f"--images: {n} images are too few to time the loader; use 64 or more (--generate N)")
        spec = ViewSpec.from_config(fast_cfg, method_class(fast_cfg).transform)
        cpu = torch.device("cpu")
        paths = [Path(source.samples[i][0]) for i in range(n)]
        print(f"{n} images from {root}, {spec.size} px views of {args.config}; one loader worker, torch 1 thread")
        print("| stage | CPU ms per image | images/s per core | wall images/s |")
        print("|---|---|---|---|")
        for name, fast in (("PIL", False), ("the fast path's: simplejpeg", True)):
            decode = decode_ms(paths, fast)
            print(f"| decode ({name}, full size) | {decode:.2f} | {1000 / decode:.0f} | |")
        transform = method_class(cpu_cfg).transform
        today, today_wall = loader_cpu_ms(build_train_views(cpu_cfg, source, cpu, transform).dataset, n)
        print(f"| two views, CPU path (augment.device=cpu) | {today:.2f} | {1000 / today:.0f} | {today_wall:.0f} |")
        fast, fast_wall = loader_cpu_ms(build_train_views(fast_cfg, source, cpu, transform).dataset, n)
        print(f"| two views, fast path CPU side (augment.device=cuda) | {fast:.2f} | {1000 / fast:.0f} | {fast_wall:.0f} |")
        rate, where = device_side(spec, args.batch, args.repeats)
        print(f"device side (both views, batch {args.batch}, {NUM_PARAMS} parameters per view) on {where}: {rate:.0f} images/s")
        if args.compare:
            for name, ms in compare_libraries(spec, min(args.batch, 64), args.repeats):
                print(f"colour jitter + blur, one view: {name}: {ms:.2f} ms per image")
        print(f"CPU-side speed-up of the fast path: {today / fast:.1f}x ({today:.2f} -> {fast:.2f} ms per image, both views)")


if __name__ == "__main__":
    main()
