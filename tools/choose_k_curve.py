"""The silhouette over k on a finished run's encoder, beside the true pair precision and recall at each k.

Post hoc, on runs that keep their labels: the run's final encoder embeds its training images (centre
crop, the projection head, as ``features: pass`` rounds do), a random sample of ``--sample`` rows is
clustered at every k of ``--ks`` (faiss, 5 restarts) and scored as ``detection.choose_k: silhouette``
scores it (:mod:`ifnd.falseneg.granularity`), with the pair precision and recall of each clustering
against the true classes. The last line per run is the k the detector would choose (its search stops
after two candidates below the best; this table scores every k) and its levels.

    python tools/choose_k_curve.py runs/studies/itm_transfer_pretrain/runs/simclr/seed0 [RUN_DIR ...] \\
        [--ks 5,10,20,40,80,160] [--sample 20000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from detection_ceiling import run_features  # noqa: E402  (tools are scripts: the sibling is imported by path)

from ifnd.config import load_config  # noqa: E402
from ifnd.falseneg.clustering import spherical_kmeans  # noqa: E402
from ifnd.falseneg.diagnostics import table_pair_counts  # noqa: E402
from ifnd.falseneg.granularity import choose_k, cosine_silhouette, levels_for, sample_rows  # noqa: E402


def faiss_kmeans(sample: torch.Tensor, ks: Sequence[int]) -> list[torch.Tensor]:
    """Assignments of ``sample [m, D]`` at each k (5 restarts, seed 0)."""
    return [torch.from_numpy(spherical_kmeans(sample.numpy(), k, nredo=5, seed=0).assignments) for k in ks]


def curve(run_dir: Path, ks: Sequence[int], sample_size: int) -> list[str]:
    """Markdown rows ``| k | silhouette | P | R |`` of one run, then its choice."""
    cfg = load_config(run_dir / "config.yaml", ["data.num_workers=0"])
    features, classes = run_features(cfg, run_dir)
    x = features["head"]
    rows = sample_rows(len(x), sample_size, 0)  # the draw of round_sample in one process
    sample, truth = x[rows], classes[rows]
    lines = [f"{run_dir}: {len(x)} rows, {int(classes.max()) + 1} classes, sample {len(sample)}",
             "| k | silhouette | pair precision | pair recall |", "|---|---|---|---|"]
    by_k = dict(zip(ks, faiss_kmeans(sample, ks)))
    for k, assignments in by_k.items():
        counts = table_pair_counts(assignments, truth)
        lines.append(f"| {k} | {cosine_silhouette(sample, assignments):.3f} | {counts.precision:.2f} | "
                     f"{counts.recall:.2f} |")
    chosen, _ = choose_k(sample, ks, lambda _, tried: [by_k[k] for k in tried])  # the clusterings above
    lines.append(f"choose_k: k = {chosen}, levels {list(levels_for(chosen))}")
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="finished run directories (config.yaml, checkpoints/last.pt)")
    parser.add_argument("--ks", default="5,10,20,40,80,160", help="comma-separated candidate ks, smallest first")
    parser.add_argument("--sample", type=int, default=20000, help="rows scored (detection.k_sample)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    ks = [int(k) for k in args.ks.split(",")]
    for run_dir in args.runs:
        print("\n".join(curve(run_dir, ks, args.sample)), flush=True)


if __name__ == "__main__":
    main()
