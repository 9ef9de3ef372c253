"""Across settings: each method's share of the oracle gap in every study, and its mean over the settings.

    python tools/leaderboard.py configs/studies/fmnist_pilot.yaml configs/studies/heldout_chars.yaml \\
        configs/studies/heldout_fmnist_moco.yaml --alias ifnd-union-all-early=default

Methods are matched by variant name across study files (``--alias NAME=METHOD`` renames a variant of
any study first). Reads the finished runs (``study.json``) only; a method missing from a setting, or a
setting without oracle results, shows "-" and is left out of that method's mean. The last two lines name
the method with the best mean share over the settings where every listed method has a figure, among those
that run without labels (not the oracles, nor a guard that reads a labelled share or an ablation that keeps
only the detections that are false or true negatives: marked "reads labels"),
and its lead over the runner-up: per setting, the per-seed difference of the two shares (paired by seed, as
every Δ is), then their mean over the settings ± sqrt(sum of the settings' per-seed sd²) / settings, the
spread of that mean for one seed a setting (the study's "± sd" convention), with its ratio: a lead under 2 sd
picks the default by the rule but is no measurable difference.
"""

from __future__ import annotations

import argparse
import math
import statistics

from ifnd.study.run import finished_rows
from ifnd.study.spec import StudySpec
from ifnd.study.summary import oracle_variant, paired_differences, score_keys


def gap_shares(spec: StudySpec, aliases: dict[str, str]) -> dict[str, tuple[float, dict[int, float]]]:
    """``{method: (mean Δ of the first score vs the baseline, {seed: that seed's Δ / the oracle's mean Δ})}`` of
    one study (the shares NaN without an oracle)."""
    rows = finished_rows(spec)
    key, oracle = score_keys(spec)[0], oracle_variant(spec)
    gains_of = lambda variant: paired_differences(rows, variant, spec.baseline, key)  # noqa: E731
    oracle_gains = gains_of(oracle) if oracle else {}
    gap = statistics.fmean(oracle_gains.values()) if oracle_gains else math.nan
    out = {}
    for variant in spec.variants:
        gains = gains_of(variant)
        if variant != spec.baseline and gains:
            out[aliases.get(variant, variant)] = (statistics.fmean(gains.values()),
                                                  {seed: g / gap if gap else math.nan for seed, g in gains.items()})
    return out


def lead(first: list[dict[int, float]], second: list[dict[int, float]]) -> tuple[float, float, list[float]]:
    """How far ``first``'s mean share is above ``second``'s: per setting (a ``{seed: share}`` of each), the mean of
    the per-seed differences; returns (their mean over the settings, sqrt(sum of the settings' per-seed sd²) /
    settings, the per-setting means). NaN where a setting has no seed in common (the sd: fewer than 2)."""
    means, variances = [], []
    for a, b in zip(first, second):
        diffs = [a[seed] - b[seed] for seed in sorted(a.keys() & b.keys())]
        means.append(statistics.fmean(diffs) if diffs else math.nan)
        variances.append(statistics.variance(diffs) if len(diffs) > 1 else math.nan)
    return statistics.fmean(means), math.sqrt(sum(variances)) / len(variances), means


def reference_variants(spec: StudySpec) -> set[str]:
    """Variants that use the true labels (oracles and noisy oracles): bounds, not methods a user can pick."""
    return {v for v in spec.variants if spec.config(v, spec.seeds[0]).detection.mode in ("oracle", "noisy_oracle")}


def labelled_variants(spec: StudySpec) -> set[str]:
    """Variants that read labels without being bounds: a guard that counts on a labelled share of the training set
    (a user with labels can pick it, but a default must run without labels), and the ablations that keep only the
    detected pairs that are false (or true) negatives (``detection.keep_pairs``)."""
    configs = {v: spec.config(v, spec.seeds[0]).detection for v in spec.variants}
    return {v for v, det in configs.items()
            if (det.mode == "ifnd" and det.guard and det.guard_labelled_share > 0) or det.keep_pairs != "all"}


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
            gain, per_seed = shares_of.get(method, (math.nan, {}))
            share = statistics.fmean(per_seed.values()) if per_seed else math.nan
            cells.append("-" if math.isnan(gain) else f"{gain:+.2f} ({'-' if math.isnan(share) else f'{100 * share:.0f}%'})")
            if not math.isnan(share):
                shares.append(share)
        means[method] = statistics.fmean(shares) if len(shares) == len(settings) else math.nan
        print(f"| {method}{' (reads labels)' if method in labelled else ''} | " + " | ".join(cells) + f" | {'-' if math.isnan(means[method]) else f'{100 * means[method]:.0f}%'} |")
    ranked = sorted((m for m in means if not math.isnan(means[m]) and m not in references | labelled),
                    key=lambda m: -means[m])
    print(f"best mean share of the oracle gap over all {len(settings)} settings, without labels: "
          + (f"{ranked[0]} ({100 * means[ranked[0]]:.0f}%)" if ranked else "none yet (a setting lacks results)"))
    if len(ranked) > 1:
        shares_by_seed = lambda m: [shares_of[m][1] for shares_of in settings.values()]  # noqa: E731
        diff, sd, by_setting = lead(shares_by_seed(ranked[0]), shares_by_seed(ranked[1]))
        ratio = f"{abs(diff) / sd:.1f} sd" if sd > 0 else "sd -"  # NaN compares False: no sd with one seed
        print(f"its lead over {ranked[1]}: {100 * diff:+.0f}% ± {100 * sd:.0f}% ({ratio}; per setting "
              + ", ".join(f"{100 * d:+.0f}%" for d in by_setting) + ")")

if __name__ == "__main__":
    main()
