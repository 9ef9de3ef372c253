"""Relate the label-free reliability signals to true pair precision, and fit the precision estimator.

Post hoc, on finished pretraining runs: each run's final encoder embeds its training set (centre
crop, as ``tools/detection_ceiling.py`` does; the projection head's and the backbone's features)
and two augmented views of it. For every k of ``--ks``, ``--restarts`` k-means runs and every
accepted share of ``--shares`` (the most confident by softmax confidence, as the detector accepts),
one calibration point: the signals of :mod:`ifnd.falseneg.reliability` (those a round computes,
:func:`~ifnd.falseneg.reliability.level_signals`, plus ``view_agreement``, the share of accepted
samples whose two views fall to the same centroid, and ``level_agreement``, with the clustering at
the next k of ``--ks``) and the true pair precision of the accepted table.

In training, from round logs (``--from-rounds``): a run made with ``detection.guard: true`` logs every
round's signals per level beside the true pair precision of that level's table (``metrics.json``'s
history); each level of each round is one point (with ``round_agreement``, the agreement with the
previous round's table, and without ``view_agreement``). No model is loaded.

Runs are grouped into settings (``--setting NAME=RUN_DIR,RUN_DIR``). The table gives each signal's
Spearman rank correlation with true precision per setting and over all points; then the logistic
estimator (:class:`~ifnd.falseneg.precision_estimate.PrecisionEstimator`) on every one or two of the
signals a round can compute is fitted on ``--fit-on`` and the best (by in-setting rank correlation,
among the fits that rank the hand-made class-following clusters of :mod:`ifnd.falseneg.scenarios`
above the nuisance-following ones) is tested on the other settings (out of setting). ``--save`` writes it (``configs/reliability/
estimator.yaml``). The last line is the out-of-setting rank correlation.

    python tools/calibrate_reliability.py --setting digits=runs/digits_e3,runs/digits_e15 \\
        --setting fmnist=runs/fmnist_e2,runs/fmnist_e6 --fit-on digits \\
        [--ks 5,10,20,40] [--shares 0.3,0.6,1.0] [--restarts 2] [--points points.json] [--save FILE]
    python tools/calibrate_reliability.py --from-points points.json --fit-on digits   # refit only
    python tools/calibrate_reliability.py --from-rounds h2=RUN,RUN --from-rounds h1=RUN,RUN --fit-on h2
    # or one run at a time: --setting digits=runs/digits_e3 --points d3.json --points-only, then
    # --from-points d3.json --from-points ...
    OMP_NUM_THREADS=1 python tools/calibrate_reliability.py --bench --restarts 5 [--n 20000 --d 128 --k 100]
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from detection_ceiling import run_features  # noqa: E402  (tools are scripts: the sibling is imported by path)

from ifnd.config import load_config  # noqa: E402
from ifnd.data.build import build_sources  # noqa: E402
from ifnd.data.views import IndexedImages, build_view_transform  # noqa: E402
from ifnd.falseneg.acceptance import accept_most_confident, softmax_confidence  # noqa: E402
from ifnd.falseneg.clustering import spherical_kmeans  # noqa: E402
from ifnd.falseneg.diagnostics import table_pair_counts  # noqa: E402
from ifnd.falseneg.guard import GuardSettings, guard_detector_round  # noqa: E402
from ifnd.falseneg.precision_estimate import ESTIMATOR_FILE, PrecisionEstimator, spearman  # noqa: E402
from ifnd.falseneg.reliability import (  # noqa: E402
    assignment_agreement, level_signals, pair_agreement, restart_assignments)
from ifnd.falseneg.scenarios import CLASS_FOLLOWING, NUISANCE_FOLLOWING, scenario_signals  # noqa: E402
from ifnd.metrics.knn import extract_features  # noqa: E402
from ifnd.pretrain.methods import build_model, method_class  # noqa: E402
from ifnd.runtime.checkpoint import load_checkpoint  # noqa: E402
from ifnd.runtime.seeding import generator  # noqa: E402

ROUND_SIGNALS = ("stability", "closeness", "margin", "size_entropy", "largest_share")
"""What every detection round computes (:func:`~ifnd.falseneg.reliability.level_signals`): the estimator's candidates."""
LOGGED_SIGNALS = ROUND_SIGNALS + ("view_agreement", "level_agreement", "round_agreement")
"""Every signal tabled; a point without one (post hoc points have no previous round, round logs no second
view) has NaN there, left out of that signal's correlation. The table's last row, ``est_precision``, is the
estimate the run's guard logged (round logs only): the committed estimator's, or the labelled subset's count."""


def view_features(cfg: Any, run_dir: Path, seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Two augmented views of the training set through the run's final model: ``{"head": (v1, v2),
    "backbone": (v1, v2)}``, each ``[N, D]`` L2-normalised in dataset order (the run's view transform)."""
    model = build_model(cfg)
    model.load_state_dict(load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"])
    transform = build_view_transform(cfg, method_class(cfg).transform)
    images = IndexedImages(build_sources(cfg)[0], lambda image: transform(image)[0])
    views: dict[str, list[torch.Tensor]] = {"head": [], "backbone": []}
    for index in range(2):
        for name, encoder in (("head", model), ("backbone", model.backbone)):
            torch.manual_seed(seed + 100 * index)  # the loader runs in the main process: the same views for both
            views[name].append(extract_features(encoder, DataLoader(images, batch_size=256), torch.device("cpu"))[0])
    return {name: (pair[0], pair[1]) for name, pair in views.items()}


def nearest(features: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """``[N]`` long, the centroid (``[K, D]``) of largest cosine similarity to each row of ``features [N, D]``."""
    return (F.normalize(features, dim=1) @ F.normalize(centroids, dim=1).T).argmax(1)


def calibration_points(features: torch.Tensor, views: tuple[torch.Tensor, torch.Tensor], classes: torch.Tensor,
                       ks: Sequence[int], shares: Sequence[float], restarts: int, niter: int, nredo: int,
                       temperature: float, points_per_cluster: int, seed: int) -> list[dict[str, float]]:
    """One point per (k, restart, share): the signals and ``precision``/``recall`` of the accepted table."""
    stream = generator(seed, "calibration")
    clusterings = {(k, r): spherical_kmeans(features.numpy(), k, niter=niter, nredo=nredo,
                                                seed=seed + 7919 * r + k)
                   for k in ks for r in range(restarts)}
    points = []
    for (k, r), result in clusterings.items():
        assign, centroids = torch.from_numpy(result.assignments), torch.from_numpy(result.centroids)
        confidence = softmax_confidence(features, centroids, assign, temperature)
        restart = restart_assignments(features, assign, k, points_per_cluster, niter, stream, nredo)
        next_k = torch.from_numpy(clusterings[(ks[(ks.index(k) + 1) % len(ks)], r)].assignments)
        in_view = [nearest(v, centroids) for v in views]
        for share in shares:
            accepted = accept_most_confident(assign, confidence, share)
            off = accepted < 0
            signals = level_signals(features, accepted, centroids, restart, stream)
            signals["view_agreement"] = assignment_agreement(in_view[0].masked_fill(off, -1),
                                                             in_view[1].masked_fill(off, -1))
            signals["level_agreement"] = pair_agreement(accepted, next_k, stream)
            counts = table_pair_counts(accepted, classes)
            points.append({"k": k, "restart": r, "share": share, **signals,
                           "precision": counts.precision, "recall": counts.recall})
    return points


def run_points(setting: str, run_dir: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every calibration point of one run, for its head and backbone features."""
    cfg = load_config(run_dir / "config.yaml", ["data.num_workers=0"])
    features, classes = run_features(cfg, run_dir)
    views = view_features(cfg, run_dir, cfg.seed)
    points = []
    for name, x in features.items():
        for point in calibration_points(x, views[name], classes, args.ks, args.shares, args.restarts,
                                        cfg.detection.kmeans_niter, cfg.detection.kmeans_nredo,
                                        cfg.detection.confidence_temperature,
                                        args.points_per_cluster, cfg.seed):
            points.append({"setting": setting, "run": str(run_dir), "embedding": name, **point})
    return points


def round_points(setting: str, run_dir: Path) -> list[dict[str, Any]]:
    """One calibration point per level and round of a finished run's round logs (``metrics.json``'s history,
    written by a run with ``detection.guard: true``): the signals that round logged and the true pair
    precision of that level's accepted table (the study's runs keep labels for this). Rounds whose level
    accepted no pair (no precision) are left out; ``view_agreement`` is NaN (a round embeds one view)."""
    history = json.loads((run_dir / "metrics.json").read_text()).get("history", [])
    points = []
    for entry in history:
        for level in itertools.count():
            prefix = f"round/level{level}/"
            if prefix + "pair_precision" not in entry:
                break
            signals = {name: entry.get(f"{prefix}sig_{name}", math.nan) for name in LOGGED_SIGNALS}
            if math.isnan(entry[prefix + "pair_precision"]) or all(math.isnan(v) for v in signals.values()):
                continue
            points.append({"setting": setting, "run": str(run_dir), "embedding": "round", "epoch": entry["epoch"],
                           "level": level, **signals, "est_precision": entry.get(prefix + "est_precision", math.nan),
                           "precision": entry[prefix + "pair_precision"]})
    return points


def column(points: Sequence[dict[str, Any]], key: str) -> torch.Tensor:
    """``[P]`` float64 values of ``key`` (NaN where a point has none)."""
    return torch.tensor([float(p.get(key, math.nan)) for p in points], dtype=torch.float64)


def correlation_table(points: Sequence[dict[str, Any]], settings: Sequence[str]) -> str:
    """Markdown: Spearman of each signal with true precision, per setting and over all points."""
    groups = {name: [p for p in points if p["setting"] == name] for name in settings}
    groups["all"] = list(points)
    lines = ["| signal | " + " | ".join(f"{name} (n={len(g)})" for name, g in groups.items()) + " |",
             "|" + "---|" * (1 + len(groups))]
    for signal in LOGGED_SIGNALS + ("est_precision",):
        cells = [f"{spearman(column(g, signal), column(g, 'precision')):+.3f}" for g in groups.values()]
        lines.append(f"| {signal} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


@functools.cache
def scenario_pair(seed: int) -> tuple[dict[str, float], dict[str, float]]:
    """The signals of the class-following and the nuisance-following scenario (:mod:`ifnd.falseneg.scenarios`)."""
    return scenario_signals(CLASS_FOLLOWING, seed), scenario_signals(NUISANCE_FOLLOWING, seed)


def ranks_scenarios(estimator: PrecisionEstimator, seeds: Sequence[int] = (0, 1, 2)) -> bool:
    """Whether the estimator ranks the class-following scenario above the nuisance-following one at every seed."""
    return all(float(estimator.predict(scenario_pair(seed)[0])) > float(estimator.predict(scenario_pair(seed)[1]))
               for seed in seeds)


def fit_best(points: Sequence[dict[str, Any]]) -> tuple[PrecisionEstimator, float, list[str]]:
    """The logistic estimator on the one or two round signals whose fit ranks ``points`` best (in setting),
    among those that rank the hand-made scenarios right; with the line of every candidate tried."""
    usable = [p for p in points if not any(math.isnan(float(p[s])) for s in ROUND_SIGNALS)]
    truth = column(usable, "precision")
    best: tuple[PrecisionEstimator, float] | None = None
    lines = []
    for size in (1, 2):
        for names in itertools.combinations(ROUND_SIGNALS, size):
            estimator = PrecisionEstimator.fit({n: column(usable, n) for n in names}, truth)
            rho = spearman(estimator.predict({n: column(usable, n) for n in names}), truth)
            sane = ranks_scenarios(estimator)
            lines.append(f"| {' + '.join(names)} | {rho:+.3f} | {'yes' if sane else 'no'} |")
            if sane and (best is None or rho > best[1]):
                best = (estimator, rho)
    if best is None:
        raise SystemExit("no estimator on one or two signals ranks the hand-made scenarios right; see the signals")
    return best[0], best[1], lines


def evaluate(estimator: PrecisionEstimator, points: Sequence[dict[str, Any]]) -> float:
    """Spearman of the estimator's prediction with the true precision of ``points``."""
    return spearman(estimator.predict({n: column(points, n) for n in estimator.signals}), column(points, "precision"))


def bench_guard(n: int, d: int, k: int, niter: int, points_per_cluster: int, repeats: int = 3,
                seed: int = 0) -> dict[str, float]:
    """Median seconds over ``repeats`` of a synthetic round (k-means, softmax confidence, acceptance; no
    embedding pass, so the guard's share of a real round is smaller) and of the guard on it."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(k, d, generator=g), dim=1)
    x = F.normalize(centres[torch.randint(0, k, (n,), generator=g)] + 0.1 * torch.randn(n, d, generator=g), dim=1)
    settings = GuardSettings(0.4, False, points_per_cluster, PrecisionEstimator(("stability",), (1.0,), 0.0),
                             niter, 1, seed)
    round_s, guard_s = [], []
    for repeat in range(repeats):
        start = time.perf_counter()
        result = spherical_kmeans(x.numpy(), k, niter=niter, seed=seed + repeat)
        assign, centroids = torch.from_numpy(result.assignments), torch.from_numpy(result.centroids)
        accepted = accept_most_confident(assign, softmax_confidence(x, centroids, assign, 0.1), 1.0)
        round_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        guard_detector_round(settings, repeat, x, [assign], accepted.unsqueeze(0), [centroids], accepted.unsqueeze(0))
        guard_s.append(time.perf_counter() - start)
    round_median, guard_median = float(torch.tensor(round_s).median()), float(torch.tensor(guard_s).median())
    return {"round_s": round_median, "guard_s": guard_median, "share": guard_median / round_median}


def parse_settings(texts: Sequence[str], parser: argparse.ArgumentParser,
                   needs: str = "checkpoints/last.pt") -> dict[str, list[Path]]:
    """``NAME=RUN_DIR,...`` texts as ``{name: [run dirs]}``, each run dir holding ``needs``."""
    settings = {}
    for text in texts:
        name, _, dirs = text.partition("=")
        runs = [Path(d) for d in dirs.split(",") if d]
        if not name or not runs:
            parser.error(f"--setting {text!r}: use NAME=RUN_DIR[,RUN_DIR...]")
        missing = [str(r) for r in runs if not (r / needs).is_file()]
        if missing:
            parser.error(f"{name}: no {needs} in {missing}; pass finished pretraining runs")
        settings[name] = runs
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", action="append", default=[], metavar="NAME=RUN_DIR,...",
                        help="a setting and its finished run directories (repeatable)")
    parser.add_argument("--from-points", action="append", default=[],
                        help="read calibration points from this JSON file (repeatable) as well as from runs")
    parser.add_argument("--from-rounds", action="append", default=[], metavar="NAME=RUN_DIR,...",
                        help="a setting and finished runs made with detection.guard=true: their round logs, one "
                        "point per level and round (repeatable; no model is loaded)")
    parser.add_argument("--points", help="write the calibration points to this JSON file")
    parser.add_argument("--fit-on", help="the setting the estimator is fitted on (default: the first)")
    parser.add_argument("--ks", default="5,10,20,40", help="comma-separated k (default: %(default)s)")
    parser.add_argument("--shares", default="0.3,0.6,1.0", help="comma-separated accepted shares (default: %(default)s)")
    parser.add_argument("--restarts", type=int, default=2, help="k-means runs per k; with --bench, repeats "
                        "(default: %(default)s)")
    parser.add_argument("--points-per-cluster", type=int, default=10,
                        help="the stability restart's subsample per cluster, as detection.guard_points_per_cluster")
    parser.add_argument("--points-only", action="store_true", help="stop after writing --points (one setting at a time)")
    parser.add_argument("--save", nargs="?", const=str(ESTIMATOR_FILE), help="write the fitted estimator "
                        "(default file: %(const)s)")
    parser.add_argument("--bench", action="store_true", help="time the guard against a synthetic round and exit")
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--d", type=int, default=128)
    parser.add_argument("--k", type=int, default=100)
    args = parser.parse_args(argv)
    if args.bench:
        cost = bench_guard(args.n, args.d, args.k, 20, args.points_per_cluster, args.restarts)
        print(f"synthetic round N={args.n} D={args.d} k={args.k}: round {cost['round_s']:.3f} s, guard "
              f"{cost['guard_s']:.3f} s = {100 * cost['share']:.1f}% of the round")
        return 0
    args.ks = [int(k) for k in args.ks.split(",")]
    args.shares = [float(s) for s in args.shares.split(",")]
    points = [p for path in args.from_points for p in json.loads(Path(path).read_text())]
    for name, runs in parse_settings(args.from_rounds, parser, "metrics.json").items():
        for run_dir in runs:
            found = round_points(name, run_dir)
            if not found:
                parser.error(f"--from-rounds {name}: {run_dir}/metrics.json logs no round signals; pass runs made "
                             "with detection.guard=true")
            points += found
    for name, runs in parse_settings(args.setting, parser).items():
        for run_dir in runs:
            points += run_points(name, run_dir, args)
            print(f"calibrated {name}: {run_dir}", flush=True)
    if args.points:
        Path(args.points).write_text(json.dumps(points))
    if args.points_only:
        return 0
    settings = list(dict.fromkeys(p["setting"] for p in points))
    if len(settings) < 2 and not args.save:
        parser.error(f"need points of at least two settings to test out of setting (or --save to fit on one), "
                     f"have {settings}")
    fit_on = args.fit_on or settings[0]
    if fit_on not in settings:
        parser.error(f"--fit-on {fit_on}: not one of the settings {settings}")
    print(f"\nSpearman rank correlation of each signal with the true pair precision of the accepted table\n")
    print(correlation_table(points, settings))
    if ESTIMATOR_FILE.is_file():  # the estimator the guard uses now, on every setting here
        committed = PrecisionEstimator.load()
        print(f"\nthe committed estimator ({' + '.join(committed.signals)}, fitted on "
              f"{committed.notes.get('fitted_on', '?')}), rank correlation: " + ", ".join(
                  f"{name} {evaluate(committed, [p for p in points if p['setting'] == name]):+.3f}" for name in settings))
    estimator, in_setting, candidates = fit_best([p for p in points if p["setting"] == fit_on])
    print(f"\nlogistic fits on {fit_on}: in-setting rank correlation, and whether it ranks the hand-made class-"
          "following clusters above nuisance-following ones\n\n| signals | Spearman | scenarios |\n|---|---|---|")
    print("\n".join(candidates))
    held_out = [p for p in points if p["setting"] != fit_on]
    out_of_setting = evaluate(estimator, held_out)
    print(f"\nestimator fitted on {fit_on}: sigmoid({estimator.intercept:+.3f} "
          + " ".join(f"{w:+.3f} * {n}" for n, w in zip(estimator.signals, estimator.weights)) + ")")
    for name in settings:
        group = [p for p in points if p["setting"] == name]
        estimate = estimator.predict({n: column(group, n) for n in estimator.signals})
        print(f"  rank correlation on {name}: {evaluate(estimator, group):+.3f}; mean estimate "
              f"{float(estimate.nanmean()):.3f}, mean true precision {float(column(group, 'precision').mean()):.3f}")
    if len(settings) > 1:
        print(f"  rank correlation over every point (all settings pooled: one threshold for all): "
              f"{evaluate(estimator, points):+.3f}")
    for other in (s for s in settings if s != fit_on):  # the other direction(s), for reference
        reverse = fit_best([p for p in points if p["setting"] == other])[0]
        print(f"(fitted on {other} instead: {' + '.join(reverse.signals)}; rank correlation on the others: "
              f"{evaluate(reverse, [p for p in points if p['setting'] != other]):+.3f})")
    if args.save:
        estimator = PrecisionEstimator(estimator.signals, estimator.weights, estimator.intercept, {
            "command": "python tools/calibrate_reliability.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "fitted_on": fit_on, "settings": {s: sorted({p["run"] for p in points if p["setting"] == s})
                                              for s in settings},
            "points": len(points), "spearman_in_setting": round(in_setting, 4),
            "spearman_out_of_setting": round(out_of_setting, 4)})
        estimator.save(args.save)
        print(f"saved {args.save}")
    if not held_out:
        print(f"fitted on {fit_on} only: no other setting, no out-of-setting test")
        return 0
    print(f"out-of-setting rank correlation (fit on {fit_on}, tested on {len(held_out)} points of "
          f"{[s for s in settings if s != fit_on]}): {out_of_setting:+.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
