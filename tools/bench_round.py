"""Time one IFND clustering round per k-means backend and rank count.

    python tools/bench_round.py --num-samples 100000 --clusters 1000,2000,4000 --backends faiss,torch \\
        [--nproc 1,2] [--device cpu|cuda] [--threads 2] [--repeats 3] [--hierarchical]
    # ImageNet scale on a GPU:
    python tools/bench_round.py --num-samples 1281167 --clusters 25000,50000,100000 --backends torch \\
        --device cuda --repeats 1

A round is what the detector does before an epoch: k-means at every level (nested with
``--hierarchical``), the softmax confidence of every sample, the acceptance of the most
confident share (``--share``) and the ``[L, N]`` label table, identical on every rank. Data:
N unit vectors around ``--centres`` random unit centres plus Gaussian noise (seeded; each
rank keeps every world-th row, as the training pass shards them).

The configurations run interleaved (faiss, torch, faiss, ... ``--repeats`` times), because
other jobs may share the machine; the table gives the median seconds of each and the inertia
of each level relative to faiss's. faiss runs in one process only (it clusters on one rank);
``--threads`` is the torch / faiss CPU thread count of every process. The last line compares
torch with faiss at one process: the time ratio (wall, and CPU time: steadier on a shared
machine) and the largest inertia ratio over the levels.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from ifnd.falseneg.acceptance import accept_most_confident, softmax_confidence
from ifnd.falseneg.label_round import cluster_levels
from ifnd.runtime import distributed as dist
from ifnd.runtime.spawn import run_ranks


def make_features(num_samples: int, dim: int, centres: int, noise: float, seed: int,
                  device: torch.device) -> torch.Tensor:
    """``[N, D]`` float32 unit vectors around ``centres`` random unit centres, on ``device``."""
    gen = torch.Generator().manual_seed(seed)
    means = F.normalize(torch.randn(centres, dim, generator=gen), dim=1)
    which = torch.randint(0, centres, (num_samples,), generator=gen)
    points = means[which] + noise * torch.randn(num_samples, dim, generator=gen)
    return F.normalize(points, dim=1).to(device)


def one_round(args: argparse.Namespace, backend: str) -> tuple[tuple[float, float], list[float], torch.Tensor]:
    """This rank's wall and CPU seconds for one round, the inertia of each level and the label table ``[L, N]``."""
    device = torch.device(args.device, dist.rank() if args.device == "cuda" else None)
    ks = [int(k) for k in args.clusters.split(",")]
    x = make_features(args.num_samples, args.dim, args.centres, args.noise, args.seed, device)
    ids = torch.arange(dist.rank(), args.num_samples, dist.world_size(), device=device)
    x = x[ids].contiguous()
    dist.barrier()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start, cpu_start = time.perf_counter(), time.process_time()
    levels = cluster_levels(x, ids, args.num_samples, ks,
                            lambda f, c, a: softmax_confidence(f, c, a, args.temperature),
                            backend=backend, hierarchical=args.hierarchical, niter=args.niter, seed=args.seed,
                            sharded=dist.world_size() > 1)
    table = torch.stack([accept_most_confident(level.assignments, level.confidence, args.share) for level in levels])
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start, time.process_time() - cpu_start)
    return seconds, [level.inertia for level in levels], table.cpu()


def measure(args: argparse.Namespace, backend: str, nproc: int) -> tuple[tuple[float, float], list[float]]:
    """Wall seconds (the slowest rank), CPU seconds (all ranks) and inertias of one round with ``nproc`` processes."""
    if nproc == 1:
        torch.set_num_threads(args.threads)
        seconds, inertias, _ = one_round(args, backend)
        return seconds, inertias
    results = run_ranks(one_round, nproc, args, backend, threads=args.threads, cuda=args.device == "cuda")
    tables = [table for _, _, table in results]
    if any(not torch.equal(tables[0], table) for table in tables[1:]):
        raise AssertionError("the label tables differ between ranks")
    return (max(wall for (wall, _), _, _ in results), sum(cpu for (_, cpu), _, _ in results)), results[0][1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-samples", type=int, default=100_000)
    parser.add_argument("--clusters", default="1000,2000,4000", help="k of each level, comma-separated")
    parser.add_argument("--backends", default="faiss,torch")
    parser.add_argument("--nproc", default="1", help="rank counts for the torch backend, comma-separated")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of every process")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--centres", type=int, default=2000, help="true clusters of the synthetic data")
    parser.add_argument("--noise", type=float, default=0.15)
    parser.add_argument("--niter", type=int, default=20)
    parser.add_argument("--share", type=float, default=0.5, help="accepted share of the pseudo-labels")
    parser.add_argument("--temperature", type=float, default=0.1)
    parser.add_argument("--hierarchical", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import faiss  # noqa: PLC0415  (only to pin its threads)
    faiss.omp_set_num_threads(args.threads)
    configs = [(backend, nproc) for backend in args.backends.split(",")
               for nproc in ([1] if backend == "faiss" else [int(p) for p in args.nproc.split(",")])]
    times: dict[tuple[str, int], list[float]] = {c: [] for c in configs}
    cpu_times: dict[tuple[str, int], list[float]] = {c: [] for c in configs}
    inertias: dict[tuple[str, int], list[float]] = {}
    for repeat in range(args.repeats):
        for config in configs:
            (seconds, cpu), inertias[config] = measure(args, *config)
            times[config].append(seconds)
            cpu_times[config].append(cpu)
            print(f"repeat {repeat}: {config[0]} x{config[1]}: {seconds:.2f} s, CPU {cpu:.2f} s", flush=True)

    reference = inertias.get(("faiss", 1))
    print(f"\nN={args.num_samples}, D={args.dim}, k={args.clusters}, device={args.device}, threads/process="
          f"{args.threads}, niter={args.niter}, hierarchical={args.hierarchical}, repeats={args.repeats}")
    print("| backend | ranks | median s | runs s | median CPU s | inertia / faiss per level |")
    print("|---|---|---|---|---|---|")
    for config in configs:
        ratios = "n/a" if reference is None else ", ".join(f"{a / b:.4f}" for a, b in zip(inertias[config], reference))
        runs = ", ".join(f"{t:.2f}" for t in times[config])
        print(f"| {config[0]} | {config[1]} | {statistics.median(times[config]):.2f} | {runs} | "
              f"{statistics.median(cpu_times[config]):.2f} | {ratios} |")
    if reference is not None and ("torch", 1) in times:
        time_ratio = statistics.median(times["torch", 1]) / statistics.median(times["faiss", 1])
        cpu_ratio = statistics.median(cpu_times["torch", 1]) / statistics.median(cpu_times["faiss", 1])
        inertia_ratio = max(a / b for a, b in zip(inertias["torch", 1], reference))
        print(f"torch/faiss time ratio {time_ratio:.3f} (CPU time {cpu_ratio:.3f}), inertia ratio {inertia_ratio:.4f}")


if __name__ == "__main__":
    main()
