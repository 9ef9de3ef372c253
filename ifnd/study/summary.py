"""A study's results: ``results.csv`` (a row per run), ``summary.md`` (mean ± std per variant and the
per-seed difference to the baseline) and PNG plots (accuracy against detection precision, the
precision/recall noise map with every detector on it, kNN curves over epochs; for ``task: itm``
validation RSUM over epochs, with the columns and grid tables of :mod:`ifnd.study.itm`)."""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path
from typing import Any, Iterable

from ifnd.study import itm
from ifnd.study.spec import StudySpec

DETECTION = ("fn_precision_mean", "fn_recall_mean", "fn_precision_end", "fn_recall_end")
TIMES = ("epoch_time_s", "round_time_s", "train_time_s")
GUARD = ("est_precision_end", "guard_abstain_share", "guard_level_abstain_share")
"""The guard's figures (:func:`ifnd.study.run.guard_figures`): tabled in the leaderboard when a variant has them."""
CAP = ("removed_share_end", "cap_level_abstain_share")
"""The removal cap's figures (:func:`ifnd.study.run.cap_figures`): tabled in the leaderboard when a variant has them."""


def score_keys(spec: StudySpec) -> list[str]:
    """The accuracy columns: kNN top-1 at each ``spec.knn_k``, then the linear probe (itm: RSUM, extended RSUM);
    the first is the one compared."""
    if spec.task == "itm":
        return list(itm.SCORES)
    return [*(f"knn{k}_top1" for k in spec.knn_k), "linear_top1"]


def score_labels(spec: StudySpec) -> list[str]:
    """Table headings of :func:`score_keys`, in the same order."""
    if spec.task == "itm":
        return list(itm.LABELS)
    return [*(f"kNN k={k}" for k in spec.knn_k), "linear"]


def detail_columns(spec: StudySpec) -> list[tuple[str, str, int]]:
    """``(row key, heading, digits)`` of the columns after the scores: detection P/R (itm: FNE's statistics and the
    data's false-negative density)."""
    if spec.task == "itm":
        return list(itm.DETAILS)
    return [(key, label, 3) for key, label in zip(DETECTION, ("P mean", "R mean", "P end", "R end"))]


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (NaN std for fewer than two values; NaN values dropped)."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def paired_differences(rows: list[dict[str, Any]], variant: str, baseline: str, key: str) -> dict[int, float]:
    """``{seed: row(variant)[key] - row(baseline)[key]}`` for the seeds both have."""
    by = {(r["variant"], r["seed"]): r for r in rows if r.get("status") == "done"}
    return {seed: by[(variant, seed)][key] - by[(baseline, seed)][key]
            for (v, seed) in by if v == variant and (baseline, seed) in by}


def _pm(mean: float, std: float, digits: int = 2) -> str:
    if math.isnan(mean):
        return "-"
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _paired(rows: list[dict[str, Any]], variant: str, reference: str, key: str) -> tuple[str, str]:
    """The cells of :func:`paired_cells` for ``variant - reference`` in ``key``."""
    return paired_cells(paired_differences(rows, variant, reference, key))


def paired_cells(diffs: dict[int, float]) -> tuple[str, str]:
    """The cells "mean ± std (per-seed differences)" and "|mean|/std" of ``{seed: difference}`` ("-" where undefined)."""
    if not diffs:
        return "-", "-"
    d_mean, d_std = mean_std(diffs.values())
    ratio = abs(d_mean) / d_std if d_std and not math.isnan(d_std) else math.nan
    per_seed = ", ".join(f"{diffs[s]:+.2f}" for s in sorted(diffs))
    return f"{_pm(d_mean, d_std)} ({per_seed})", "-" if math.isnan(ratio) else f"{ratio:.1f}"


def comparison_table(spec: StudySpec, rows: list[dict[str, Any]]) -> str:
    """The markdown table of ``spec.compare``: every score of each variant minus its reference, seed by seed."""
    scores = score_keys(spec)
    head = "| variant | reference | " + " | ".join(f"Δ {label} (per seed) | sd" for label in score_labels(spec)) + " |"
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for variant, reference in spec.compare:
        lines.append("| " + " | ".join([variant, reference, *(cell for key in scores
                                                              for cell in _paired(rows, variant, reference, key))]) + " |")
    return "\n".join(lines) + "\n"


def oracle_variant(spec: StudySpec) -> str | None:
    """The study's upper bound: the first variant that removes every true false negative from the first step
    (``detection.mode=oracle``, ``oracle=full``, elimination), or None (always for ``task: itm``)."""
    if spec.task != "pretrain":
        return None
    for variant in spec.variants:
        det = spec.config(variant, spec.seeds[0]).detection
        if det.mode == "oracle" and det.oracle == "full" and det.loss == "elimination":
            return variant
    return None


def leaderboard_table(spec: StudySpec, rows: list[dict[str, Any]]) -> str:
    """Every variant but the baseline, best share of the oracle gap first: Δ of the first score vs the baseline
    (mean ± std, per seed), the share of the oracle's mean Δ it reaches, end P / R (and, when a variant ran with
    the guard, its estimated end P and the share of rounds it abstained; with the removal cap, the share a level
    would remove at the end and the share of levels capped), and its mean epoch time over the baseline's. Empty
    without an oracle variant with results."""
    oracle, key = oracle_variant(spec), score_keys(spec)[0]
    gap, _ = mean_std(paired_differences(rows, oracle, spec.baseline, key).values()) if oracle else (math.nan, 0)
    if math.isnan(gap):
        return ""
    base_time, _ = mean_std(r.get("epoch_time_s", math.nan) for r in rows
                            if r["variant"] == spec.baseline and r.get("status") == "done")
    guarded = any(not math.isnan(r.get(GUARD[0], math.nan)) for r in rows)
    capped = any(not math.isnan(r.get(CAP[0], math.nan)) for r in rows)
    figures = (*DETECTION[2:], *(GUARD if guarded else ()), *(CAP if capped else ()))
    entries = []
    for variant in spec.variants:
        gains = paired_differences(rows, variant, spec.baseline, key)
        if variant == spec.baseline or not gains:
            continue
        done = [r for r in rows if r["variant"] == variant and r.get("status") == "done"]
        mean, _ = mean_std(gains.values())
        diff, ratio = _paired(rows, variant, spec.baseline, key)
        time, _ = mean_std(r.get("epoch_time_s", math.nan) for r in done)
        entries.append((mean / gap, [variant, str(len(gains)), diff, ratio, f"{100 * mean / gap:.0f}%",
                                     *(_pm(*mean_std(r.get(k, math.nan) for r in done), 2) for k in figures),
                                     "-" if math.isnan(time / base_time) else f"{time / base_time:.2f}"]))
    head = (f"| variant | seeds | Δ {score_labels(spec)[0]} vs {spec.baseline} (per seed) | Δ/sd | share of the "
            f"oracle gap | P end | R end | " + ("estimated P end | rounds abstained | levels abstained | " if guarded else "")
            + ("removed share end | levels capped | " if capped else "") + f"epoch time / {spec.baseline} |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    lines += ["| " + " | ".join(cells) + " |" for _, cells in sorted(entries, key=lambda e: -e[0])]
    return (f"\n## Leaderboard\n\nShare of the oracle gap: mean Δ over the mean Δ of `{oracle}` "
            f"({gap:+.2f}).\n\n" + "\n".join(lines) + "\n")


def summary_table(spec: StudySpec, rows: list[dict[str, Any]]) -> str:
    """The markdown table of ``summary.md``: one line per variant."""
    scores = score_keys(spec)
    labels = score_labels(spec)
    details = detail_columns(spec)
    head = ("| variant | seeds | " + " | ".join(labels) + f" | Δ {labels[0]} vs baseline (per seed) | Δ/sd | "
            + "".join(f"{label} | " for _, label, _ in details) + "epoch s | round s |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    not_run = [v for v in spec.variants if not any(r["variant"] == v for r in rows)]
    for variant in spec.variants:
        if variant in not_run:
            continue
        done = [r for r in rows if r["variant"] == variant and r.get("status") == "done"]
        diff, ratio = ("-", "-") if variant == spec.baseline else _paired(rows, variant, spec.baseline, scores[0])
        cells = [variant, str(len(done)), *(_pm(*mean_std(r[k] for r in done)) for k in scores), diff, ratio,
                 *(_pm(*mean_std(r.get(k, math.nan) for r in done), digits) for k, _, digits in details),
                 *(_pm(*mean_std(r.get(k, math.nan) for r in done), 1) for k in TIMES[:2])]
        lines.append("| " + " | ".join(cells) + " |")
    diverged = [f"{r['variant']} seed {r['seed']}" for r in rows if r.get("status") == "diverged"]
    notes = [f"\nDiverged (NaN loss; not in the means): {', '.join(diverged)}."] if diverged else []
    notes += [f"\nNot run yet: {', '.join(not_run)}."] if not_run else []
    return "\n".join(lines + notes) + "\n"


def write_summary(spec: StudySpec, rows: list[dict[str, Any]]) -> list[Path]:
    """Write ``results.csv``, ``summary.md`` and the plots into ``spec.output_dir``; returns the paths."""
    out = spec.output_dir
    out.mkdir(parents=True, exist_ok=True)
    with (out / "results.csv").open("w", newline="") as handle:
        columns = ["variant", "seed", "status", *score_keys(spec), *(k for k, _, _ in detail_columns(spec)),
                   *((*GUARD, *CAP) if spec.task != "itm" else ()), *TIMES]
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore", restval="")
        writer.writeheader()
        writer.writerows(rows)
    columns_note = itm.NOTE if spec.task == "itm" else (
        "P and R are the pair precision and recall of the detected false negatives (mean over the epochs that "
        "detect, and at the last).")
    header = (f"# Study `{spec.path}`\n\nSeeds {list(spec.seeds)}; baseline `{spec.baseline}`; mean ± sample std over "
              f"seeds; Δ is paired by seed; Δ/sd is |mean difference| over the std of the differences. "
              f"{columns_note}\n\n")
    compared = ("\n## Paired comparisons\n\nEach score of the variant minus the reference's, seed by seed; sd is "
                "|mean| over the std of the differences.\n\n" + comparison_table(spec, rows)) if spec.compare else ""
    grids = itm.grid_tables(list(spec.variants), lambda v, k: _pm(*mean_std(r[k] for r in rows if r["variant"] == v
                                                                            and r.get("status") == "done"), 1))
    (out / "summary.md").write_text(header + summary_table(spec, rows) + leaderboard_table(spec, rows) + grids
                                    + compared)
    return [out / "results.csv", out / "summary.md", *plot(spec, rows)]


def plot(spec: StudySpec, rows: list[dict[str, Any]]) -> list[Path]:
    """``accuracy_vs_precision.png``, ``noise_map.png`` and ``curves.png``; returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out, paths, key = spec.output_dir, [], score_keys(spec)[0]
    points = []  # (variant, P, R, accuracy mean, accuracy std, Δ mean)
    for variant in spec.variants:
        done = [r for r in rows if r["variant"] == variant and r.get("status") == "done"]
        p, _ = mean_std(r.get("fn_precision_mean", math.nan) for r in done)
        recall, _ = mean_std(r.get("fn_recall_mean", math.nan) for r in done)
        acc, acc_std = mean_std(r[key] for r in done)
        gain, _ = mean_std(paired_differences(rows, variant, spec.baseline, key).values())
        points.append((variant, p, recall, acc, acc_std, gain))
    detecting = [pt for pt in points if not math.isnan(pt[1])]
    if detecting:
        fig, (ax, key_ax) = plt.subplots(1, 2, figsize=(8.5, 4), gridspec_kw={"width_ratios": [3, 1.2]})
        for name, p, _, acc, std, _ in detecting:
            ax.errorbar(p, acc, yerr=0 if math.isnan(std) else std, fmt="o", capsize=3)
        _number_points(ax, key_ax, [(pt[0], pt[1], pt[3], pt[5]) for pt in detecting])
        base = next(pt for pt in points if pt[0] == spec.baseline)
        if not math.isnan(base[3]):
            ax.axhline(base[3], color="grey", linestyle="--", label=f"{spec.baseline}")
            ax.legend(fontsize=7)
        ax.set(xlabel="detection pair precision (mean over detecting epochs)", ylabel=f"{key} (%)")
        paths.append(_save(fig, out / "accuracy_vs_precision.png"))
        fig, (ax, key_ax) = plt.subplots(1, 2, figsize=(9, 5), gridspec_kw={"width_ratios": [3, 1.2]})
        gains = [pt[5] for pt in detecting if not math.isnan(pt[5])]
        limit = max([abs(g) for g in gains] + [1e-6])
        for name, p, recall, _, _, gain in detecting:
            oracle = spec.config(name, spec.seeds[0]).detection.mode in ("oracle", "noisy_oracle")
            sc = ax.scatter(p, recall, c=[0 if math.isnan(gain) else gain], cmap="RdYlGn", vmin=-limit, vmax=limit,
                            marker="o" if oracle else "*", s=60 if oracle else 180, edgecolors="black")
        fig.colorbar(sc, ax=ax, label=f"Δ {key} vs {spec.baseline} (points)")
        ax.set(xlim=(0, 1.05), ylim=(0, 1.05), xlabel="pair precision", ylabel="pair recall",
               title="noise map: oracles (o) and detectors (*)")
        _number_points(ax, key_ax, [(pt[0], pt[1], pt[2], pt[5]) for pt in detecting])
        paths.append(_save(fig, out / "noise_map.png"))
    fig, ax = plt.subplots(figsize=(6, 4))
    curve_key = "val/rsum" if spec.task == "itm" else "knn_top1"
    for variant in spec.variants:
        curves = [_curve(spec.run_dir(variant, seed), curve_key) for seed in spec.seeds]
        curves = [c for c in curves if c]
        if curves:
            epochs = sorted(set.intersection(*(set(c) for c in curves)))
            ax.plot(epochs, [statistics.fmean(c[e] for c in curves) for e in epochs], label=variant)
    ax.set(xlabel="epoch", ylabel="validation RSUM" if spec.task == "itm" else "kNN monitor top-1 (%)")
    ax.legend(fontsize=7)
    paths.append(_save(fig, out / "curves.png"))
    return paths


def _number_points(ax: Any, key_ax: Any, points: list[tuple[str, float, float, float]]) -> None:
    """Label each ``(name, x, y, gain)`` point on ``ax`` with a number (one label for the points within 4% of
    the axes' span of each other, as the oracles at (1, 1) or IFND's options are) and list "number name
    (gain)" on ``key_ax``: names written beside the points overlap wherever detectors cluster."""
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    groups: list[tuple[float, float, list[int]]] = []  # (x, y of the first point, its numbers)
    for number, (_, x, y, _) in enumerate(points, start=1):
        near = next((g for g in groups if abs(g[0] - x) <= 0.04 * (x1 - x0) and abs(g[1] - y) <= 0.04 * (y1 - y0)), None)
        if near:
            near[2].append(number)
        else:
            groups.append((x, y, [number]))
    for x, y, numbers in groups:
        ax.annotate(",".join(map(str, numbers)), (x, y), fontsize=7, xytext=(6, 4), textcoords="offset points")
    key_ax.axis("off")
    key_ax.text(0, 1, "\n".join(f"{n:>2} {name}" + ("" if math.isnan(gain) else f" ({gain:+.2f})")
                                for n, (name, _, _, gain) in enumerate(points, start=1)),
                va="top", fontsize=7, family="monospace", transform=key_ax.transAxes)


def _curve(run_dir: Path, key: str) -> dict[int, float]:
    """``{epochs done: value of key}`` from a run's ``metrics.json`` (empty when it has none)."""
    path = run_dir / "metrics.json"
    if not path.is_file():
        return {}
    return {h["epoch"] + 1: h[key] for h in json.loads(path.read_text())["history"] if key in h}


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
