"""Across settings: each method's share of the oracle gap in every study, and its mean over the settings.

    python tools/leaderboard.py configs/studies/fmnist_pilot.yaml configs/studies/heldout_chars.yaml \\
        configs/studies/heldout_fmnist_moco.yaml --alias ifnd-union-all-early=default

Methods are matched by variant name across study files (``--alias NAME=METHOD`` renames a variant of
any study first). Reads the finished runs (``study.json``) only; a method missing from a setting, or a
setting without oracle results, shows "-" and is left out of that method's mean. The last line names
the method with the best mean share over the settings where every listed method has a figure, among those
that run without labels (not the oracles, nor a guard that reads a labelled share: marked "reads labels").
"""

from __future__ import annotations

import argparse
import math
import statistics

from ifnd.study.run import finished_rows
from ifnd.study.spec import StudySpec
from ifnd.study.summary import oracle_variant, paired_differences, score_keys


def gap_shares(spec: StudySpec, aliases: dict[str, str]) -> dict[str, tuple[float, float]]:
    """``{method: (mean Δ of the first score vs the baseline, share of the oracle's mean Δ)}`` of one study."""
    rows = finished_rows(spec)
    key, oracle = score_keys(spec)[0], oracle_variant(spec)
    mean = lambda values: statistics.fmean(values) if values else math.nan  # noqa: E731
    gap = mean(list(paired_differences(rows, oracle, spec.baseline, key).values())) if oracle else math.nan
    out = {}
    for variant in spec.variants:
        gains = list(paired_differences(rows, variant, spec.baseline, key).values())
        if variant != spec.baseline and gains:
            out[aliases.get(variant, variant)] = (mean(gains), mean(gains) / gap if gap else math.nan)
    return out


def reference_variants(spec: StudySpec) -> set[str]:
    """Variants that use the true labels (oracles and noisy oracles): bounds, not methods a user can pick."""
    return {v for v in spec.variants if spec.config(v, spec.seeds[0]).detection.mode in ("oracle", "noisy_oracle")}


def labelled_variants(spec: StudySpec) -> set[str]:
    """Variants whose guard reads a labelled share of the training set: a user with labels can pick them, but
    a default must run without labels."""
    configs = {v: spec.config(v, spec.seeds[0]).detection for v in spec.variants}
    return {v for v, det in configs.items() if det.mode == "ifnd" and det.guard and det.guard_labelled_share > 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("studies", nargs="+", help="study files")
    parser.add_argument("--alias", action="append", default=[], help="VARIANT=METHOD, e.g. ifnd-union-all-early=default")
    args = parser.parse_args()
    aliases = dict(a.split("=", 1) for a in args.alias)
    specs = [StudySpec.load(path) for path in args.studies]
    settings = {path: gap_shares(spec, aliases) for path, spec in zip(args.studies, specs)}
    references = {aliases.get(v, v) for spec in specs for v in reference_variants(spec)}
    labelled = {aliases.get(v, v) for spec in specs for v in labelled_variants(spec)}
    methods = sorted({m for shares in settings.values() for m in shares})
    names = [path.rsplit("/", 1)[-1].removesuffix(".yaml") for path in args.studies]
    print("| method | " + " | ".join(f"{n}: Δ (share of gap)" for n in names) + " | mean share |")
    print("|---|" + "---|" * (len(names) + 1))
    means = {}
    for method in methods:
        cells, shares = [], []
        for shares_of in settings.values():
            gain, share = shares_of.get(method, (math.nan, math.nan))
            cells.append("-" if math.isnan(gain) else f"{gain:+.2f} ({'-' if math.isnan(share) else f'{100 * share:.0f}%'})")
            if not math.isnan(share):
                shares.append(share)
        means[method] = statistics.fmean(shares) if len(shares) == len(settings) else math.nan
        print(f"| {method}{' (reads labels)' if method in labelled else ''} | " + " | ".join(cells) + f" | {'-' if math.isnan(means[method]) else f'{100 * means[method]:.0f}%'} |")
    ranked = sorted((m for m in means if not math.isnan(means[m]) and m not in references | labelled),
                    key=lambda m: -means[m])
    print(f"best mean share of the oracle gap over all {len(settings)} settings, without labels: "
          + (f"{ranked[0]} ({100 * means[ranked[0]]:.0f}%)" if ranked else "none yet (a setting lacks results)"))


if __name__ == "__main__":
    main()
