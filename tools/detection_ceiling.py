"""How precise can detection be on the features a study's runs learned? Precision at chosen recalls.

For each finished run of the chosen variants, the final encoder embeds the study's training
images (centre crop, no augmentation), and every ordered pair (i, j), i != j, is ranked by the
cosine similarity of the two embeddings. The table gives the pair precision at the first cut
of that ranking that reaches each recall, ranked over the whole set (a global similarity
threshold) and per anchor (each anchor flags its m nearest), for the projection head's
embeddings (what IFND clusters by default) and the backbone's features, with the pair
precision/recall of one k-means per level of the run's ``detection.num_clusters`` and of
their union, for reference. Mean ± std over the seeds.

No detector that flags the pairs above one similarity threshold (the global ranking) or each
anchor's m nearest (the per-anchor ranking) on these features is more precise at a recall than
that ranking's best cut. Other rules (a threshold of its own per anchor, a clustering, whose
membership is transitive) are not bound by it; the k-means columns show how a clustering
compares. The features are those at the end of training, the best the run had; the detector
saw weaker ones during training.

    python tools/detection_ceiling.py [--config configs/studies/fmnist_pilot.yaml]
        [--variants baseline,ifnd,ifnd-union-all-early] [--recall 0.1,0.3,0.55,0.9] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ifnd.data.build import build_sources, eval_loader
from ifnd.falseneg.clustering import spherical_kmeans
from ifnd.falseneg.diagnostics import PairCounts, precision_at_recall, similarity_ranking_curve, table_pair_counts
from ifnd.metrics.knn import extract_features
from ifnd.pretrain.methods import build_model
from ifnd.runtime.checkpoint import load_checkpoint
from ifnd.study.run import finished_rows
from ifnd.study.spec import StudySpec
from ifnd.study.summary import mean_std

STUDY = Path(__file__).resolve().parents[1] / "configs" / "studies" / "fmnist_pilot.yaml"


def run_features(cfg: Any, run_dir: Path) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """``({"head": [N, proj_dim], "backbone": [N, feat_dim]}, classes [N])`` of a run's final model
    on its training images, L2-normalised, in dataset order."""
    model = build_model(cfg)
    model.load_state_dict(load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"])
    loader = eval_loader(build_sources(cfg)[0], cfg.data.image_size, cfg.augment.normalize, 256, cfg.data.num_workers)
    head, classes = extract_features(model, loader, torch.device("cpu"))
    backbone, _ = extract_features(model.backbone, loader, torch.device("cpu"))
    return {"head": head, "backbone": backbone}, classes


def kmeans_pairs(features: torch.Tensor, classes: torch.Tensor, levels: Sequence[int], niter: int,
                 seed: int) -> dict[str, PairCounts]:
    """Pair counts of one spherical k-means per level (every sample labelled) and of the levels' union."""
    counts, union = {}, torch.zeros(len(classes), len(classes), dtype=torch.bool)
    for k in levels:
        assignments = spherical_kmeans(features.numpy(), k, niter=niter, seed=seed).assignments
        counts[f"k={k}"] = table_pair_counts(assignments, classes)
        labels = torch.from_numpy(assignments)
        union |= labels.view(-1, 1) == labels.view(1, -1)
    union.fill_diagonal_(False)
    same = classes.view(-1, 1) == classes.view(1, -1)
    same.fill_diagonal_(False)
    counts["union"] = PairCounts(int(union.sum()), int((union & same).sum()), int(same.sum()))
    return counts


def score_run(cfg: Any, run_dir: Path, recalls: Sequence[float]) -> dict[str, dict[str, float]]:
    """Every figure of one run, by features (``head``, ``backbone``): ``{"global P@R<r>": ...,
    "per-anchor P@R<r>": ..., "k-means <level> P": ..., "k-means <level> R": ...}``."""
    features, classes = run_features(cfg, run_dir)
    figures: dict[str, dict[str, float]] = {}
    for name, x in features.items():
        row = figures[name] = {}
        for ranking, per_anchor in (("global", False), ("per-anchor", True)):
            precision, recall = similarity_ranking_curve(x, classes, per_anchor)
            row.update({f"{ranking} P@R{r:g}": precision_at_recall(precision, recall, r) for r in recalls})
        for level, counts in kmeans_pairs(x, classes, cfg.detection.num_clusters, cfg.detection.kmeans_niter,
                                          cfg.seed).items():
            row[f"k-means {level} P"], row[f"k-means {level} R"] = counts.precision, counts.recall
    return figures


def table(scored: dict[str, list[dict[str, dict[str, float]]]]) -> str:
    """Markdown: a line per (variant, features), mean ± std over the seeds; k-means levels as mean "P / R"."""
    first = next(iter(scored.values()))[0]["head"]
    ranked = [k for k in first if "P@R" in k]
    levels = [k[: -len(" P")] for k in first if k.startswith("k-means") and k.endswith(" P")]
    lines = ["| variant | features | seeds | " + " | ".join(ranked + [f"{lv} P / R" for lv in levels]) + " |",
             "|" + "---|" * (3 + len(ranked) + len(levels))]

    def cell(runs: list[dict[str, float]], key: str) -> str:
        mean, std = mean_std(run[key] for run in runs)
        return f"{mean:.3f}" if np.isnan(std) else f"{mean:.3f} ± {std:.3f}"

    for variant, runs in scored.items():
        for name in runs[0]:
            by_seed = [run[name] for run in runs]
            cells = [cell(by_seed, k) for k in ranked]
            cells += [f"{mean_std(r[lv + ' P'] for r in by_seed)[0]:.3f} / {mean_std(r[lv + ' R'] for r in by_seed)[0]:.3f}"
                      for lv in levels]
            lines.append(f"| {variant} | {name} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(STUDY), help="study file (default: %(default)s)")
    parser.add_argument("--variants", default="baseline,ifnd,ifnd-union-all-early", help="comma-separated variants")
    parser.add_argument("--recall", default="0.1,0.3,0.55,0.9", help="comma-separated recalls to read precision at")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="study key (e.g. output_dir=DIR) or base key, as for ifnd study")
    args = parser.parse_args(argv)
    spec = StudySpec.load(args.config, args.overrides)
    recalls = [float(r) for r in args.recall.split(",")]
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in spec.variants]
    if unknown:
        parser.error(f"unknown variants {unknown}; the study has {list(spec.variants)}")
    done = {(r["variant"], r["seed"]) for r in finished_rows(spec) if r["status"] == "done"}
    scored: dict[str, list[dict[str, dict[str, float]]]] = {}
    for variant in variants:
        for seed in spec.seeds:
            run_dir = spec.run_dir(variant, seed)
            if (variant, seed) not in done:
                print(f"skipping {variant} seed {seed}: no finished run in {run_dir}", flush=True)
                continue
            scored.setdefault(variant, []).append(score_run(spec.config(variant, seed), run_dir, recalls))
            print(f"scored {variant} seed {seed}", flush=True)
    if not scored:
        print(f"no finished run of {variants} under {spec.output_dir}; run the study first")
        return 1
    print(f"\nPair precision of similarity rankings on the final features ({args.config}; P@R: the precision at "
          f"the first cut reaching recall R; k-means: every sample labelled), mean ± std over seeds\n")
    print(table(scored))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
