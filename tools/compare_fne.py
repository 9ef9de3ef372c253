"""FNE against its baselines and ablations on the built-in demo set, over several seeds.

Every run of the experiment file (``runs``: table row -> overrides; VSE++, VSE0, the hardest
momentum candidate, InfoNCE, uniform random draws, FNE and FNE with one part off) is trained with each
seed (``seeds``), from the same initial weights and caption order per seed, and its ``best.pt``
(best validation RSUM) is scored on the demo test split (200 images, 1,000 captions): RSUM with
the one annotated image, and extended RSUM counting every image a caption fits. The first table
gives mean ± std over seeds, each seed's RSUM and the share of chosen negatives of the anchor's
class in the last epoch; the second, for FNE runs, the last epoch's evidence that each part acts
(share of draws with ready statistics, share of candidates past the false-negative switch, mean
weight of true false negatives and of true negatives, the two Gaussians).

Runs whose test score exists are skipped and unfinished ones resume, so the command can be
stopped and continued. The settings are an experiment file (``--config``, default
configs/experiments/fne_demo.yaml); ``--set KEY=VALUE`` applies to every run, a run's own keys last.

    python tools/compare_fne.py [--config configs/experiments/fne_demo.yaml] [--set ...]
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path
from typing import Any, Sequence

import torch

from ifnd.config import add_config_args, format_override, load_experiment
from ifnd.itm.data import load_demo
from ifnd.itm.evaluate import evaluate_checkpoint
from ifnd.itm.schema import ITM_SCHEMA
from ifnd.itm.train import itm_train
from ifnd.study.summary import mean_std

EXPERIMENT = Path(__file__).resolve().parents[1] / "configs" / "experiments" / "fne_demo.yaml"
SETTINGS = ("runs", "seeds", "threads", "out")
FNE_KEYS = ("fne/ready_share", "fne/above_switch_share", "fne/weight_true_fn", "fne/weight_true_neg",
            "fne/pos_mean", "fne/pos_std", "fne/neg_mean", "fne/neg_std")
LAST_EPOCH_KEYS = ("same_class_negatives_pct", *FNE_KEYS)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser, example="negatives.memory_size=4096")
    parser.add_argument("--out", help="parent folder of the runs (default: the file's out)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: the file's threads)")
    return parser.parse_args(argv)


def run_once(cfg: Any) -> dict[str, Any]:
    """Train (or resume) one run and score its best checkpoint on the test split (cached in ``score.json``);
    with the last epoch's figures of ``LAST_EPOCH_KEYS`` from its ``metrics.json``."""
    run_dir = Path(cfg.output_dir)
    cached = run_dir / "score.json"
    if not cached.is_file():
        itm_train(cfg, resume="auto")
        test, _ = evaluate_checkpoint(run_dir / "checkpoints" / "best.pt", "test")
        cached.write_text(json.dumps({"rsum": test["rsum"], "ext_rsum": test.get("ext_rsum", math.nan)}, indent=2))
    score = json.loads(cached.read_text())
    last = json.loads((run_dir / "metrics.json").read_text())["history"][-1]
    return {"rsum": score["rsum"], "ext_rsum": score["ext_rsum"],
            **{key: last.get(key, math.nan) for key in LAST_EPOCH_KEYS}}


def run_folder(name: str) -> str:
    """A table row's run folder: its name in lower case, runs of other characters as ``-``, so that
    editing the table (a row added, removed or moved) never hands one row's cached score to another."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def describe_captions(split: Any) -> str:
    """How much of a split's false negatives are verbatim copies, and how many images each caption fits."""
    owners: dict[str, set[int]] = {}
    for caption, image in zip(split.captions, split.caption_image):
        owners.setdefault(caption, set()).add(int(image))
    shared = sum(len(owners[caption]) > 1 for caption in split.captions) / len(split.captions)
    return (f"{len(split.captions):,} captions, {100 * shared:.1f}% shared verbatim with another image, each fits "
            f"{split.matches.sum(axis=1).mean():.1f} images on average")


def _pm(values: list[float], digits: int = 1) -> str:
    mean, std = mean_std(values)
    return "-" if math.isnan(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    experiment = load_experiment(args.config or EXPERIMENT, SETTINGS, schema=ITM_SCHEMA)
    torch.set_num_threads(args.threads or experiment.settings["threads"])
    out = Path(args.out or experiment.settings["out"])
    seeds = experiment.settings["seeds"]
    configs = {(name, seed): experiment.config([*args.overrides, *overrides, format_override("seed", seed),
                                                format_override("output_dir", str(out / run_folder(name) / f"seed{seed}"))])
               for name, overrides in experiment.settings["runs"].items() for seed in seeds}
    scores = {}
    for done, (key, cfg) in enumerate(configs.items()):
        print(f"[{done + 1}/{len(configs)}] {key[0]} seed {key[1]}", flush=True)
        scores[key] = run_once(cfg)
    cfg = experiment.config(args.overrides)
    print(f"\ndemo set (digits + semantic captions), {cfg.model.backbone} {cfg.data.image_size} px, "
          f"{cfg.train.epochs} epochs, batch {cfg.train.batch_size}, memory {cfg.negatives.memory_size}; seeds {seeds}; "
          f"test split (200 images, 1,000 captions), best-val checkpoint ({experiment.path.name})")
    if cfg.data.name == "demo":
        print(", ".join(f"{split}: {describe_captions(load_demo(split, cfg.data.image_size))}" for split in ("train", "test")))
    print()
    print("| negatives | RSUM | per seed | extended RSUM | same-class negatives % |")
    print("|---" * 5 + "|")
    for name in experiment.settings["runs"]:
        rows = [scores[(name, seed)] for seed in seeds]
        per_seed = ", ".join(f"{r['rsum']:.1f}" for r in rows)
        print(f"| {name} | {_pm([r['rsum'] for r in rows])} | {per_seed} | {_pm([r['ext_rsum'] for r in rows])} | "
              f"{_pm([r['same_class_negatives_pct'] for r in rows])} |")
    print("\nFNE's statistics in the last epoch, mean ± std over seeds (ready share: sampler calls with ready "
          "statistics; past switch: share of candidates with P_fn above negatives.fn_threshold; w: mean draw "
          "weight of true false negatives and of true negatives; the Gaussians of positive and negative "
          "similarities):\n")
    print("| negatives | ready share | past switch | w(true FN) | w(true neg) | positives mean, std | negatives mean, std |")
    print("|---" * 7 + "|")
    for name in experiment.settings["runs"]:
        rows = [scores[(name, seed)] for seed in seeds]
        if all(math.isnan(r["fne/ready_share"]) for r in rows):
            continue
        cells = [_pm([r[k] for r in rows], 3) for k in FNE_KEYS[:4]]
        cells += [f"{_pm([r[f'fne/{side}_mean'] for r in rows], 3)}, {_pm([r[f'fne/{side}_std'] for r in rows], 3)}"
                  for side in ("pos", "neg")]
        print(f"| {name} | " + " | ".join(cells) + " |")
    (out / "summary.json").write_text(json.dumps({f"{n} / seed {s}": v for (n, s), v in scores.items()}, indent=2))


if __name__ == "__main__":
    main()
