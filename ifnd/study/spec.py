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
``knn_k``, ``compare``) or, for any other key, ``base``. Every key is checked at load (``linear``
against the ``linear.*`` keys of ``python -m ifnd config --defaults --kind eval``); a variant
name given twice is refused, as is any key twice in one mapping of the file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ifnd.config import SCHEMA, Config, ConfigError, Option, format_override, parse_override, read_yaml, resolve
from ifnd.eval.schema import EVAL_SCHEMA
from ifnd.itm.schema import ITM_SCHEMA

log = logging.getLogger(__name__)

TOP_KEYS = ("task", "output_dir", "seeds", "baseline", "base", "variants", "knn_k", "linear", "compare")
TASK_SCHEMAS: dict[str, dict[str, Option]] = {"pretrain": SCHEMA, "itm": ITM_SCHEMA}
"""What a study's runs are (``task``), with the config schema of each."""
MIN_SEEDS = 3  # fewer is allowed (pilots, tests) with a warning


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
        """Read and validate a study file; every run's config and the study's own keys are checked here, so a
        typo fails before training."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"study file {str(path)!r} not found; see configs/studies/")
        values = read_yaml(path, "study file") or {}
        unknown = [key for key in values if key not in TOP_KEYS] if isinstance(values, dict) else []
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
        where = f"study file {str(path)!r}"
        seeds = _int_list(values.get("seeds", [0, 1, 2]), "seeds", where, minimum=0)
        if len(seeds) < MIN_SEEDS:
            log.warning("%s has %d seed(s) %s; a claim needs at least %d (the std over seeds is what tells a gain "
                        "from noise)", where, len(seeds), list(seeds), MIN_SEEDS)
        variants = _variants(values["variants"], where)
        baseline = values.get("baseline", next(iter(variants)))
        if not isinstance(baseline, str) or baseline not in variants:
            raise ConfigError(f"study baseline {baseline!r} is not one of the variants {list(variants)}")
        compare = values.get("compare") or []
        pairs = compare if isinstance(compare, list) else [compare]
        bad = [pair for pair in pairs if not isinstance(pair, list) or len(pair) != 2 or not set(pair) <= set(variants)]
        if bad:
            raise ConfigError(f"study 'compare' takes [variant, reference] pairs of variants {list(variants)}; "
                              f"got {bad}")
        linear = values.get("linear") or {}
        if not isinstance(linear, dict):
            raise ConfigError(f"{where}: 'linear' takes a mapping of linear.* keys, e.g. {{epochs: 100}}; got {linear!r}")
        resolve({"linear": linear}, where=f"{where} (linear)", schema=EVAL_SCHEMA)
        output_dir = values.get("output_dir", f"runs/{path.stem}")
        if not isinstance(output_dir, str) or not output_dir:
            raise ConfigError(f"{where}: 'output_dir' takes a folder path; got {output_dir!r}")
        spec = cls(path, Path(output_dir), seeds, baseline, values["base"], tuple(base_overrides), variants,
                   _int_list(values.get("knn_k", [20, 200]), "knn_k", where, minimum=1), linear,
                   tuple(tuple(pair) for pair in pairs), task)
        for variant in variants:
            spec.config(variant, seeds[0])
        return spec


def _int_list(value: Any, key: str, where: str, minimum: int) -> tuple[int, ...]:
    """``value`` as a non-empty tuple of distinct ints of at least ``minimum`` (a bare int is a list of one)."""
    items = value if isinstance(value, list) else [value]
    if not items or any(not isinstance(v, int) or isinstance(v, bool) or v < minimum for v in items) \
            or len(set(items)) != len(items):
        raise ConfigError(f"{where}: '{key}' takes a non-empty list of distinct integers >= {minimum}; got {value!r}")
    return tuple(items)


def _variants(value: Any, where: str) -> dict[str, tuple[str, ...]]:
    """``variants``: a mapping of name -> list of ``key=value`` overrides (duplicate names are refused by the loader)."""
    if not isinstance(value, dict) or not value:
        raise ConfigError(f"{where}: 'variants' takes a mapping of name -> [key=value, ...]; got {value!r}")
    variants = {}
    for name, sets in value.items():
        sets = sets or []
        if not isinstance(name, str) or not name or "/" in name \
                or not isinstance(sets, list) or not all(isinstance(text, str) for text in sets):
            raise ConfigError(f"{where}: variant {name!r} must be a name (no '/') with a list of key=value "
                              f"overrides, e.g. {name}: [detection.mode=none]; got {sets!r}")
        variants[name] = tuple(sets)
    return variants
