"""Start-up time of an image folder source: today's check of every file against the index.

    python tools/bench_startup.py --root /tmp/startup_jpegs --generate 20000

Times, in seconds (each the median of ``--repeats`` runs, page cache warm after the first):

* ``checked``: ``ImageFileDataset.from_folder``, which opens and checks every image (the
  image-folder source before the index, still what a caller without a run folder gets);
* ``first start``: :func:`ifnd.data.index.folder_source` in a fresh run folder (scan, write the index);
* ``resume``: the same again, reading the index the first start wrote.

``--generate N`` first writes N small JPEGs (64 x 48) in 100 class folders; the check's cost
is per file (open, parse the header), so small files do not flatter the index. On a network
file system both the check and the scan cost more per file; the resume does not.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ifnd.data.index import folder_source  # noqa: E402
from ifnd.data.sources import ImageFileDataset  # noqa: E402


def generate(root: Path, count: int, classes: int = 100) -> None:
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = root / f"n{i % classes:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"img_{i:07d}.JPEG"
        if not path.exists():
            Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(path, quality=90)


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="image folder (root/class_x/img.jpg)")
    parser.add_argument("--generate", type=int, default=0, help="first write N small JPEGs into --root")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if args.generate:
        generate(Path(args.root), args.generate)
    ImageFileDataset.from_folder(args.root)  # warm the page cache for every row alike
    checked, dataset = timed(lambda: ImageFileDataset.from_folder(args.root), args.repeats)
    runs = Path(tempfile.mkdtemp(prefix="bench_startup_"))
    try:
        def first_start() -> object:
            shutil.rmtree(runs / "run", ignore_errors=True)
            return folder_source(args.root, str(runs / "run"))

        first, _ = timed(first_start, args.repeats)
        resume, indexed = timed(lambda: folder_source(args.root, str(runs / "run")), args.repeats)
    finally:
        shutil.rmtree(runs)
    assert len(indexed) == len(dataset), "the index and the checked folder disagree"
    print(f"{len(dataset)} images in {args.root}, median of {args.repeats}")
    print("| start | seconds | speed-up |")
    print("|---|---|---|")
    print(f"| checked (open every file) | {checked:.2f} | 1.0x |")
    print(f"| first start (scan, write the index) | {first:.2f} | {checked / first:.1f}x |")
    print(f"| resume (read the index) | {resume:.3f} | {checked / resume:.0f}x |")


if __name__ == "__main__":
    main()
