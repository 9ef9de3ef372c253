"""A study file: which variants of a pretraining config to run, with which seeds, and how to score them.

Layout (YAML under ``configs/studies/``)::

    output_dir: runs/study_fmnist     # DIR: DIR/runs/<variant>/seed<k>, DIR/results.csv, DIR/summary.md, DIR/*.png
    seeds: [0, 1, 2]                  # at least 3 for a claim
    baseline: baseline                # the variant every other is compared with, seed by seed
    base: {...}                       # ordinary pretraining keys (python -m ifnd config --defaults)
    variants:                         # name -> overrides on top of base, applied last
      baseline: [detection.mode=none]
      oracle-full: [detection.mode=oracle, detection.oracle=full]
    knn_k: [20, 200]                  # kNN neighbours scored on the final encoder
    linear: {epochs: 100}             # linear.* keys of the linear probe on cached features
    compare:                          # optional [variant, reference] pairs: summary.md's paired table
      - [oracle-full, baseline]       # (every score, seed by seed)

``--set KEY=VALUE`` changes a top-level study key (``output_dir``, ``seeds``, ``baseline``,
``knn_k``, ``compare``) or, for any other key, ``base``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import yaml

from ifnd.config import Config, ConfigError, format_override, parse_override, resolve

TOP_KEYS = ("output_dir", "seeds", "baseline", "base", "variants", "knn_k", "linear", "compare")


@dataclass(frozen=True)
class StudySpec:
    """A parsed, validated study file (see the module docstring)."""

    path: Path
    output_dir: Path
    seeds: tuple[int, ...]
    baseline: str
    base: dict[str, Any]
    base_overrides: tuple[str, ...]
    variants: dict[str, tuple[str, ...]]
    knn_k: tuple[int, ...]
    linear: dict[str, Any]
    compare: tuple[tuple[str, str], ...] = ()

    def config(self, variant: str, seed: int) -> Config:
        """The resolved pretraining config of one run."""
        run_dir = self.run_dir(variant, seed)
        overrides = [*self.base_overrides, *self.variants[variant], f"seed={seed}",
                     format_override("output_dir", str(run_dir))]
        return resolve(self.base, overrides, where=f"{self.path} (base + variant {variant!r})")

    def run_dir(self, variant: str, seed: int) -> Path:
        return self.output_dir / "runs" / variant / f"seed{seed}"

    def runs(self) -> list[tuple[str, int]]:
        """Every (variant, seed), seed-major: a partial study already holds whole seeds of every variant."""
        return [(variant, seed) for seed in self.seeds for variant in self.variants]

    @classmethod
    def load(cls, path: str | Path, overrides: Sequence[str] = ()) -> "StudySpec":
        """Read and validate a study file; every run's config is resolved here, so a typo fails before training."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"study file {str(path)!r} not found; see configs/studies/")
        values = yaml.safe_load(path.read_text()) or {}
        unknown = [key for key in values if key not in TOP_KEYS]
        if not isinstance(values, dict) or unknown or "variants" not in values or "base" not in values:
            raise ConfigError(f"study file {str(path)!r} needs 'base' and 'variants' and only the keys {list(TOP_KEYS)}"
                              f"{f'; unknown: {unknown}' if unknown else ''}")
        base_overrides = []
        for text in overrides:
            key, value = parse_override(text)
            if key in TOP_KEYS:
                values[key] = value
            else:
                base_overrides.append(text)
        seeds = tuple(values.get("seeds", [0, 1, 2]))
        variants = {name: tuple(sets or ()) for name, sets in values["variants"].items()}
        baseline = values.get("baseline", next(iter(variants)))
        if baseline not in variants:
            raise ConfigError(f"study baseline {baseline!r} is not one of the variants {list(variants)}")
        if len(set(seeds)) != len(seeds) or not seeds:
            raise ConfigError(f"study seeds must be distinct and non-empty, got {list(seeds)}")
        compare = tuple(tuple(pair) for pair in values.get("compare") or ())
        bad = [pair for pair in compare if len(pair) != 2 or not set(pair) <= set(variants)]
        if bad:
            raise ConfigError(f"study 'compare' takes [variant, reference] pairs of variants {list(variants)}; "
                              f"got {[list(pair) for pair in bad]}")
        spec = cls(path, Path(values.get("output_dir", f"runs/{path.stem}")), seeds, baseline, values["base"],
                   tuple(base_overrides), variants, tuple(values.get("knn_k", [20, 200])), values.get("linear", {}),
                   compare)
        for variant in variants:
            spec.config(variant, seeds[0])
        return spec
