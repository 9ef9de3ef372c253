"""How large a share of every anchor's negatives each detector removed, against what it gained.

    python tools/removal_vs_gain.py configs/studies/fmnist_pilot.yaml configs/studies/heldout_fmnist_moco.yaml \
        configs/studies/heldout_chars.yaml configs/studies/heldout_digits.yaml

The evidence behind the removal cap (``detection.max_removed_share``, docs/ifnd.md). For every variant of
each study that removes pairs (not the baseline, not a peer loss), per finished seed: the removed share,
the share of the ordered pairs of the training set that its detection flagged at its largest, and Δ, the
paired kNN difference to the baseline of the same seed.

* Clustering rounds (``ifnd``, the oracles): the largest share one level's table flagged, over the rounds,
  among the levels the cap and the guard left in place (what the loss removed, level by level).
  Runs with the cap log it (``round/level<l>/removed_share``); earlier
  runs logged each level's true pair precision P and recall R, and flagged pairs are R x same-class pairs
  / P, so the share is ``R * s / P`` with ``s`` the share of ordered pairs of the training set that
  share a class (counted from the data's labels).
* Per-step detectors (``threshold``, ``fnc``) and the noisy oracles (whose rounds log the clean table they
  degrade step by step): the largest epoch tally of what the loss removed, ``R * s / P``.

``pairs from`` says where a detector's pairs come from: the embedding, or the labels (the noisy
oracles draw their false pairs from pairs of confusable classes, not from the embedding). Rows are
sorted by the removed share, largest first.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
from typing import Any

from ifnd.data.build import build_sources, source_labels
from ifnd.falseneg.removal_cap import removed_share
from ifnd.study.run import finished_rows
from ifnd.study.spec import StudySpec
from ifnd.study.summary import paired_differences, score_keys

LEVEL = re.compile(r"round/level(\d+)/(pair_precision|removed_share)$")


def flagged_share(recall: float, precision: float, same_class: float) -> float:
    """The share of ordered pairs a detection flagged, from its pair recall and precision: flagged pairs are
    ``recall * same-class pairs / precision``; 0.0 at precision 0 (nothing flagged)."""
    return recall * same_class / precision if precision > 0 else 0.0


def round_shares(history: list[dict[str, Any]], same_class: float) -> list[float]:
    """Per round, the largest share one level left to the loss flagged: logged, or ``R * same_class / P`` from its
    logged P / R; a level the cap or the guard withdrew flags nothing (0.0 when every level was withdrawn).

    Args:
        history: a run's ``metrics.json`` history (round entries carry ``round/level<l>/...``).
        same_class: the share of the training set's ordered pairs that share a class.

    Returns:
        one share per round that flagged any pair (levels with P = 0 or no P flagged none).
    """
    shares = []
    for entry in history:
        levels = sorted({m.group(1) for k in entry if (m := LEVEL.match(k))})
        if not levels:
            continue
        kept = [lv for lv in levels if not entry.get(f"round/level{lv}/cap_abstain")
                and not entry.get(f"round/level{lv}/guard_abstain")]  # what the loss was left with
        flagged = [entry.get(f"round/level{lv}/removed_share") for lv in kept]
        derived = [flagged_share(entry.get(f"round/level{lv}/pair_recall", 0.0),
                                 entry.get(f"round/level{lv}/pair_precision", 0.0), same_class) for lv in kept]
        shares.append(max([f if f is not None else d for f, d in zip(flagged, derived)], default=0.0))
    return shares


def tally_shares(history: list[dict[str, Any]], same_class: float) -> list[float]:
    """Per epoch, the share of ordered pairs the loss removed, ``R * same_class / P`` of the epoch's tally."""
    return [flagged_share(e["fn_recall"], e["fn_precision"], same_class) for e in history
            if e.get("fn_precision") and e["fn_precision"] > 0 and "fn_recall" in e]


def same_class_share(spec: StudySpec) -> float:
    """The share of ordered pairs of the study's training set that share a class."""
    train, _ = build_sources(spec.config(spec.baseline, spec.seeds[0]))
    return removed_share(source_labels(train))


def variant_rows(spec: StudySpec) -> list[list[Any]]:
    """``[study, variant, pairs from, seeds, removed share min, max, Δ mean, Δ sd, per-seed Δ]`` per variant."""
    rows, same_class = finished_rows(spec), same_class_share(spec)
    key, out = score_keys(spec)[0], []
    for variant in spec.variants:
        detection = spec.config(variant, spec.seeds[0]).detection
        if variant == spec.baseline or detection.mode == "none" or detection.keep_pairs != "all":
            continue
        gains = paired_differences(rows, variant, spec.baseline, key)
        if not gains:
            continue
        shares = []
        for seed in sorted(gains):
            history = json.loads((spec.run_dir(variant, seed) / "metrics.json").read_text())["history"]
            per_round = (tally_shares(history, same_class) if detection.mode == "noisy_oracle"  # its rounds log the
                         else round_shares(history, same_class) or tally_shares(history, same_class))  # clean table
            shares.append(max(per_round) if per_round else math.nan)
        deltas = [gains[s] for s in sorted(gains)]
        source = "labels" if detection.mode in ("oracle", "noisy_oracle") else "embedding"
        out.append([spec.path.stem, variant, source, len(deltas), min(shares), max(shares), statistics.mean(deltas),
                    statistics.stdev(deltas) if len(deltas) > 1 else math.nan, deltas])
    return out


def table(rows: list[list[Any]]) -> str:
    """Markdown, largest removed share first; Δ/sd is |mean| over the sd of the per-seed differences."""
    lines = ["| study | variant | pairs from | seeds | removed share (per seed, min-max) | Δ vs baseline (per seed) | Δ/sd |",
             "|---|---|---|---|---|---|---|"]
    for study, variant, source, n, low, high, mean, sd, deltas in sorted(rows, key=lambda r: -r[5]):
        ratio = "-" if not sd or math.isnan(sd) else f"{abs(mean) / sd:.1f}"
        per_seed = ", ".join(f"{d:+.2f}" for d in deltas)
        lines.append(f"| {study} | {variant} | {source} | {n} | {low:.2f}-{high:.2f} | {mean:+.2f} ± {sd:.2f} "
                     f"({per_seed}) | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("studies", nargs="+", help="study files (configs/studies/*.yaml)")
    args = parser.parse_args(argv)
    print(table([row for path in args.studies for row in variant_rows(StudySpec.load(path))]))


if __name__ == "__main__":
    main()
