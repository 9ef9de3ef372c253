"""Bitwise check that a refactor of the pretraining code changed no behaviour.

Trains one tiny run per (detection case, method) and compares each run's final model
weights with a reference saved earlier: ``torch.equal`` on every tensor of the state dict.
Record the reference at the code before the change, then check the changed code; ``PYTHONPATH``
names the checkout whose ``ifnd`` runs (the first line printed says which one did):

    git archive main | tar -x -C /tmp/base
    PYTHONPATH=/tmp/base python tools/check_refactor_equivalence.py record runs/equivalence
    PYTHONPATH=. python tools/check_refactor_equivalence.py check runs/equivalence   # exit 1 on any difference

The runs are digits at 16 px, 128 samples, batch 32, 3 epochs, no loader workers, a warm-up
of one epoch (so that rounds happen before epochs 1 and 2); each case sets a few
``detection.*`` / ``negatives.*`` keys (:data:`CASES`). ``--only`` picks cases by name.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch

import ifnd
from ifnd.config import resolve
from ifnd.pretrain.task import PretrainTask
from ifnd.runtime.checkpoint import load_checkpoint
from ifnd.runtime.loop import Engine

METHODS = ("simclr", "moco")
DETECTION = {"warmup_epochs": 1, "num_clusters": [5, 10], "kmeans_init": "kmeans++", "accept_start": 0.5,
             "accept_end": 1.0, "accept_schedule": "linear"}
# case name -> (config sections on top of the tiny run, methods it applies to)
CASES: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "none": ({"detection": {"mode": "none"}}, METHODS),
    "ifnd-pass": ({"detection": {**DETECTION, "mode": "ifnd", "features": "pass"}}, METHODS),
    "ifnd-bank": ({"detection": {**DETECTION, "mode": "ifnd", "features": "bank"}}, METHODS),
    "ifnd-attraction-average": ({"detection": {**DETECTION, "mode": "ifnd", "loss": "attraction",
                                               "combine": "average", "embedding": "backbone"}}, METHODS),
    "oracle-full": ({"detection": {**DETECTION, "mode": "oracle", "oracle": "full"}}, METHODS),
    "oracle-scheduled": ({"detection": {**DETECTION, "mode": "oracle", "oracle": "scheduled"}}, METHODS),
    "noisy_oracle": ({"detection": {**DETECTION, "mode": "noisy_oracle", "oracle": "full",
                                    "oracle_precision": 0.6, "oracle_recall": 0.5}}, METHODS),
    "threshold": ({"detection": {**DETECTION, "mode": "threshold", "threshold_quantile": 0.1}}, METHODS),
    "fne": ({"negatives": {"sampler": "fne", "warmup_epochs": 1, "min_positives": 1}}, ("moco",)),
}


def run_values(method: str, sections: dict[str, Any], output_dir: str) -> dict[str, Any]:
    """The config values of one tiny run."""
    values: dict[str, Any] = {
        "method": method, "seed": 0, "output_dir": output_dir, "device": "cpu",
        "data": {"name": "digits", "image_size": 16, "num_workers": 0, "max_train_samples": 128},
        "model": {"backbone": "small_cnn", "proj_hidden_dim": 32, "proj_dim": 16},
        "moco": {"queue_size": 64},
        "train": {"epochs": 3, "batch_size": 32, "lr": 0.3},
        "knn": {"every": 0, "k": 10},
    }
    for section, updates in sections.items():
        values.setdefault(section, {}).update(updates)
    return values


def final_weights(method: str, sections: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Train one tiny run in a temporary folder; its final model state dict."""
    with tempfile.TemporaryDirectory() as tmp:
        Engine(resolve(run_values(method, sections, tmp)), PretrainTask).fit()
        return load_checkpoint(Path(tmp) / "checkpoints" / "last.pt")["model"]


def differences(reference: dict[str, torch.Tensor], weights: dict[str, torch.Tensor]) -> list[str]:
    """The names of the tensors that are not bitwise equal (or exist on one side only)."""
    names = sorted(set(reference) | set(weights))
    return [n for n in names if n not in reference or n not in weights or not torch.equal(reference[n], weights[n])]


def selected_runs(only: Sequence[str] | None) -> list[tuple[str, str]]:
    """``(case, method)`` of every run, restricted to the cases in ``only``."""
    unknown = set(only or ()) - set(CASES)
    if unknown:
        raise SystemExit(f"--only: unknown cases {sorted(unknown)}; known: {', '.join(CASES)}")
    return [(case, method) for case, (_, methods) in CASES.items() if not only or case in only for method in methods]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("record", "check"))
    parser.add_argument("directory", type=Path, help="where the reference weights are written / read")
    parser.add_argument("--only", type=lambda s: s.split(","), help="comma-separated case names")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"  # the engine's automatic cpu_threads then keeps the one thread
    args.directory.mkdir(parents=True, exist_ok=True)
    print(f"code: {Path(ifnd.__file__).parent}", flush=True)
    failed = 0
    for case, method in selected_runs(args.only):
        path = args.directory / f"{case}-{method}.pt"
        weights = final_weights(method, CASES[case][0])
        if args.action == "record":
            torch.save(weights, path)
            print(f"{case:24s} {method:6s} recorded {path}", flush=True)
            continue
        if not path.exists():
            raise SystemExit(f"{path} is missing: run 'record' first at the reference code")
        diff = differences(torch.load(path), weights)
        failed += bool(diff)
        print(f"{case:24s} {method:6s} {'identical' if not diff else 'DIFFERENT: ' + ', '.join(diff[:4])}", flush=True)
    if args.action == "check":
        print(f"{failed} of {len(selected_runs(args.only))} runs differ")
    return int(failed > 0)


if __name__ == "__main__":
    sys.exit(main())
