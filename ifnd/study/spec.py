"""A study file: which variants of a pretraining (or image-text) config to run, with which seeds, and how to score them.

Layout (YAML under ``configs/studies/``)::

    task: pretrain                    # pretrain (default): `ifnd pretrain` runs scored by kNN and a linear probe;
                                      # itm: `itm-train` runs scored by test RSUM (ifnd/study/itm.py)
    output_dir: runs/study_fmnist     # DIR: DIR/runs/<variant>/seed<k>, DIR/results.csv, DIR/summary.md, DIR/*.png
    seeds: [0, 1, 2]                  # at least 3 for a claim
    baseline: baseline                # the variant every other is compared with, seed by seed
    base: {...}                       # ordinary keys of the task (python -m ifnd config --defaults [--kind itm])
    variants:                         # name -> overrides on top of base, applied last ({seed}: the run's seed)
      baseline: [detection.mode=none]
      oracle-full: [detection.mode=oracle, detection.oracle=full]
    knn_k: [20, 200]                  # pretrain: kNN neighbours scored on the final encoder
    linear: {epochs: 100}             # pretrain: linear.* keys of the linear probe on cached features
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

from ifnd.config import SCHEMA, Config, ConfigError, Option, format_override, parse_override, resolve
from ifnd.itm.schema import ITM_SCHEMA

TOP_KEYS = ("task", "output_dir", "seeds", "baseline", "base", "variants", "knn_k", "linear", "compare")
TASK_SCHEMAS: dict[str, dict[str, Option]] = {"pretrain": SCHEMA, "itm": ITM_SCHEMA}
"""What a study's runs are (``task``), with the config schema of each."""


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
    task: str = "pretrain"

    def config(self, variant: str, seed: int) -> Config:
        """The resolved config (pretraining, or ``itm-train`` for ``task: itm``) of one run."""
        run_dir = self.run_dir(variant, seed)
        own = [o.replace("{seed}", str(seed)) for o in self.variants[variant]]
        overrides = [*self.base_overrides, *own, f"seed={seed}", format_override("output_dir", str(run_dir))]
        return resolve(self.base, overrides, where=f"{self.path} (base + variant {variant!r})",
                       schema=TASK_SCHEMAS[self.task])

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
        task = values.get("task", "pretrain")
        if task not in TASK_SCHEMAS:
            raise ConfigError(f"study task must be one of {list(TASK_SCHEMAS)}, got {task!r} in {str(path)!r}")
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
                   compare, task)
        for variant in variants:
            spec.config(variant, seeds[0])
        return spec
