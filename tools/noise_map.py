"""The noise map of a study: the gain of removal at each (pair precision, recall), and where it stops paying.

    python tools/noise_map.py configs/studies/fmnist_pilot.yaml [--min-seeds 3]

Reads the finished runs (``study.json``) of the study's ``noisy_oracle`` variants (true labels degraded to a
pair precision and recall, ``detection.oracle_precision`` / ``oracle_recall``) and of its full oracle
(precision and recall 1.0). Every cell is the paired per-seed Δ of the first score against the baseline:
mean ± sd (each seed), and the mean over the sd of the differences. The break-even precision at a recall
is where the mean Δ crosses zero going up in precision (linear between the two measured precisions that
bracket the highest crossing); "< P" when every measured precision gains, "> P" when none does. A mean
above zero need not be a measurable gain, so the last line gives, at every recall, the lowest precision
from which every measured precision gains by more than 2 sd of its per-seed differences. Cells with
fewer than ``--min-seeds`` seeds are shown but left out of both.
"""

from __future__ import annotations

import argparse
import math
import statistics
from typing import Any

from ifnd.study.run import finished_rows
from ifnd.study.spec import StudySpec
from ifnd.study.summary import paired_cells, paired_differences, score_keys

Cell = tuple[float, float]
"""(pair precision, recall) of a noise-map point."""


def noise_cells(spec: StudySpec, rows: list[dict[str, Any]]) -> dict[Cell, dict[int, float]]:
    """``{(precision, recall): {seed: Δ}}`` of every noisy-oracle variant and the full oracle with results."""
    key = score_keys(spec)[0]
    cells: dict[Cell, dict[int, float]] = {}
    for variant in spec.variants:
        detection = spec.config(variant, spec.seeds[0]).detection
        if detection.mode == "noisy_oracle":
            cell = (detection.oracle_precision, detection.oracle_recall)
        elif detection.mode == "oracle" and detection.oracle == "full" and detection.loss == "elimination":
            cell = (1.0, 1.0)
        else:
            continue
        gains = paired_differences(rows, variant, spec.baseline, key)
        if gains:
            cells[cell] = gains
    return cells


def break_even(means: dict[float, float]) -> tuple[str, float]:
    """Where the mean Δ crosses zero going up in precision.

    Args:
        means: ``{precision: mean Δ}`` at one recall.

    Returns:
        ``(relation, precision)``: ``("=", p)`` with ``p`` interpolated linearly between the two precisions
        that bracket the highest crossing from ``<= 0`` to ``> 0``; ``("<", lowest)`` when every precision
        gains; ``(">", highest)`` when the highest precision does not gain. ``("?", nan)`` without points.
    """
    if not means:
        return "?", math.nan
    ps = sorted(means)
    if means[ps[-1]] <= 0:
        return ">", ps[-1]
    for low, high in zip(reversed(ps[:-1]), reversed(ps[1:])):  # from the top down: the highest crossing
        if means[low] <= 0 < means[high]:
            return "=", low + (high - low) * (0 - means[low]) / (means[high] - means[low])
    return "<", ps[0]


def measurable_from(cells: dict[float, list[float]], sds: float = 2.0) -> float:
    """The lowest precision from which every measured precision (``{precision: per-seed Δ}``, at one recall)
    gains by more than ``sds`` sd of its per-seed differences; NaN when the highest does not."""
    lowest = math.nan
    for p in sorted(cells, reverse=True):
        values = cells[p]
        mean, sd = statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.inf
        if not mean > sds * sd:
            break
        lowest = p
    return lowest


def _cell_text(gains: dict[int, float]) -> str:
    """A cell of the grid: the study summary's paired cell and its |mean|/sd."""
    text, ratio = paired_cells(gains)
    return f"{text}; {ratio} sd" if ratio != "-" else text


def noise_map_table(cells: dict[Cell, dict[int, float]],
                    min_seeds: int) -> tuple[str, dict[float, tuple[str, float]], dict[float, float]]:
    """The markdown grid (precision down, recall across), the break-even per recall and the lowest precision of a
    measurable gain per recall (:func:`measurable_from`), both of cells with at least ``min_seeds`` seeds (the
    full oracle's recall 1.0 has neither)."""
    precisions = sorted({p for p, _ in cells}, reverse=True)
    recalls = sorted({r for _, r in cells})
    lines = ["| precision \\ recall | " + " | ".join(f"{r:g}" for r in recalls) + " |",
             "|---|" + "---|" * len(recalls)]
    for p in precisions:
        lines.append(f"| {p:g} | " + " | ".join(_cell_text(cells[(p, r)]) if (p, r) in cells else "-"
                                                for r in recalls) + " |")
    points = {r: {p: list(g.values()) for (p, rr), g in cells.items() if rr == r and len(g) >= min_seeds}
              for r in recalls if r < 1.0}
    return ("\n".join(lines), {r: break_even({p: statistics.fmean(v) for p, v in at.items()}) for r, at in points.items()},
            {r: measurable_from(at) for r, at in points.items()})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study", help="study file with noisy_oracle variants")
    parser.add_argument("--min-seeds", type=int, default=3, help="seeds a cell needs to count in the break-even")
    args = parser.parse_args(argv)
    spec = StudySpec.load(args.study)
    cells = noise_cells(spec, finished_rows(spec))
    if not cells:
        parser.error(f"{args.study}: no finished noisy_oracle or full-oracle runs; run the study first")
    table, even, measurable = noise_map_table(cells, args.min_seeds)
    print(f"Δ {score_keys(spec)[0]} vs {spec.baseline}, paired by seed\n\n{table}\n")
    print("break-even precision: " + ", ".join(
        f"recall {r:g} {rel} {p:.2f}" if rel != "?" else f"recall {r:g} not measured ({args.min_seeds}+ seeds)"
        for r, (rel, p) in even.items()))
    print("measurable gain (> 2 sd) from precision: " + ", ".join(
        f"recall {r:g} {'none' if math.isnan(p) else f'{p:g}'}" for r, p in measurable.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
