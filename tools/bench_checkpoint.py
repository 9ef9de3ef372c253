"""Size and write time of a pretraining checkpoint at ImageNet scale, whole bank vs side file.

    python tools/bench_checkpoint.py [--num-samples 1281167] [--clusters 25000,50000,100000]
                                     [--folder /tmp/ifnd_ckpt_bench] [--repeats 3]

Builds the state a MoCo v2 ResNet-50 + IFND (``detection.features=bank``) run checkpoints, from
synthetic tensors of the real shapes: the model of ``configs/imagenet_moco_ifnd.yaml`` (online
and momentum encoders), SGD momentum buffers, the 65,536-key queue, the ``[L, N]`` label table
(what :meth:`~ifnd.falseneg.detectors.base.TableDetector.table_state` keeps), and the ``[N, 128]``
bank. It writes

* ``whole``: a checkpoint holding the whole bank (before the side file);
* ``step``: a step checkpoint with :class:`~ifnd.falseneg.bank_file.BankFile`'s share at its
  largest (half the rows written since the base);
* ``base``: the side file, written about once per epoch;

and prints the size and the median write time of each (:func:`~ifnd.runtime.checkpoint.save_checkpoint`,
the same atomic write as training).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path

import torch

from ifnd.config import load_config
from ifnd.falseneg.bank_file import BankFile
from ifnd.pretrain.methods import build_model
from ifnd.runtime.checkpoint import save_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def training_state(num_samples: int, clusters: list[int]) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """Everything a checkpoint holds but the bank, and the bank ``[N, 128]`` with its filled mask."""
    cfg = load_config(ROOT / "configs" / "imagenet_moco_ifnd.yaml", overrides=["device=cpu"])
    model = build_model(cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    dim, levels = cfg.model.proj_dim, len(clusters)
    state = {
        "model": model.state_dict(),
        "optimizer": {"state": {i: {"momentum_buffer": torch.zeros_like(p)} for i, p in enumerate(params)}},
        "queue": {"keys": torch.randn(cfg.moco.queue_size, dim), "ids": torch.arange(cfg.moco.queue_size)},
        "detector": {
            "labels": torch.randint(0, max(clusters), (levels, num_samples)),
            "last_round": 20, "share": 1.0,
        },
    }
    return state, torch.randn(num_samples, dim), torch.ones(num_samples, dtype=torch.bool)


def timed_write(state: dict, path: Path, repeats: int) -> tuple[float, float]:
    """Median seconds of ``repeats`` atomic writes of ``state`` to ``path``, and its size in MB."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        save_checkpoint(state, path)
        times.append(time.perf_counter() - start)
    return statistics.median(times), path.stat().st_size / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-samples", type=int, default=1_281_167)
    parser.add_argument("--clusters", default="25000,50000,100000")
    parser.add_argument("--folder", type=Path, default=Path("/tmp/ifnd_ckpt_bench"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    state, bank, filled = training_state(args.num_samples, [int(k) for k in args.clusters.split(",")])
    args.folder.mkdir(parents=True, exist_ok=True)
    bank_file = BankFile(args.folder, args.num_samples)
    bank_file.split(bank, filled)  # the base: the side file
    base_seconds = timed_write({"bank": bank, "filled": filled}, args.folder / bank_file.base, args.repeats)
    bank_file.mark(torch.arange(args.num_samples // 2))  # half the rows written since: the largest share
    step = {**state, "detector": {**state["detector"], "bank_file": bank_file.split(bank, filled)}}
    whole = {**state, "detector": {**state["detector"], "bank": bank, "bank_filled": filled}}
    rows = [("whole bank in every checkpoint (before)", *timed_write(whole, args.folder / "whole.pt", args.repeats)),
            ("step checkpoint, largest bank share (after)", *timed_write(step, args.folder / "step.pt", args.repeats)),
            ("side file, about once per epoch", *base_seconds)]
    print(f"N={args.num_samples}, k={args.clusters}, folder={args.folder}, repeats={args.repeats}")
    print("| checkpoint | median write s | size MB |")
    print("|---|---|---|")
    for name, seconds, size in rows:
        print(f"| {name} | {seconds:.2f} | {size:.0f} |")
    shutil.rmtree(args.folder)


if __name__ == "__main__":
    main()
