"""FNE vs hardest-negative triplet training on the built-in demo set, same budget and seed.

Trains, from the same initial weights and caption order, the hardest in-batch negative
(VSE++), the hardest negative over batch + memory, and FNE sampling over batch +
memory; evaluates each run's ``best.pt`` (best validation RSUM) on the demo test split
(180 images, 900 captions) and prints a markdown table. "same-class neg." is the share
of chosen negatives (last epoch) showing the anchor's digit: captions of the same digit
often say exactly the same thing, so these are largely false negatives.

    python tools/compare_fne.py [--epochs 8] [--image-size 16] [--out runs/compare_fne]

Sized for a few minutes on 2 CPU cores (small_cnn, 16 px).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ifnd.config import load_config  # noqa: E402
from ifnd.eval.retrieval import METRIC_KEYS  # noqa: E402
from ifnd.itm.evaluate import evaluate_checkpoint  # noqa: E402
from ifnd.itm.schema import ITM_SCHEMA  # noqa: E402
from ifnd.itm.train import itm_train  # noqa: E402

RUNS = (
    ("hardest, batch only (VSE++)", ["negatives.sampler=hardest", "negatives.use_memory=false"]),
    ("hardest, batch + memory", ["negatives.sampler=hardest", "negatives.use_memory=true"]),
    ("FNE, batch + memory", ["negatives.sampler=fne", "negatives.use_memory=true"]),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/compare_fne", help="parent folder of the runs")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1 avoids spin-wait stalls on a shared, busy CPU)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="extra config override applied to every run (repeatable)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    common = [f"train.epochs={args.epochs}", f"data.image_size={args.image_size}", f"seed={args.seed}",
              "train.lr_decay_epochs=[" + str(max(1, args.epochs - 2)) + "]", *args.overrides]
    rows = []
    for index, (name, overrides) in enumerate(RUNS):
        run_dir = Path(args.out) / f"run{index}"
        cfg = load_config("configs/itm_demo.yaml", [*common, *overrides, f"output_dir={run_dir}"], schema=ITM_SCHEMA)
        history = itm_train(cfg)["history"]
        test, _ = evaluate_checkpoint(run_dir / "checkpoints" / "best.pt", "test")
        rows.append((name, test, history[-1].get("same_class_negatives_pct", float("nan")),
                     sum(h["epoch_time_s"] for h in history)))
        print(f"{name}: test RSUM {test['rsum']:.1f}", file=sys.stderr, flush=True)
    print(f"\ndemo set (digits + generated captions), small_cnn {args.image_size} px, {args.epochs} epochs, "
          f"batch {cfg.train.batch_size}, memory {cfg.negatives.memory_size}, seed {args.seed}; "
          "test split, best-val checkpoint\n")
    print("| negatives | R@1 i2t | R@5 i2t | R@10 i2t | R@1 t2i | R@5 t2i | R@10 t2i | RSUM | same-class neg. % | train s |")
    print("|---" * 10 + "|")
    for name, test, same_class, seconds in rows:
        print(f"| {name} | " + " | ".join(f"{test[k]:.1f}" for k in METRIC_KEYS) + f" | {same_class:.1f} | {seconds:.0f} |")
    (Path(args.out) / "summary.json").write_text(json.dumps(
        [{"run": n, **{k: t[k] for k in METRIC_KEYS}, "same_class_negatives_pct": s, "train_time_s": sec}
         for n, t, s, sec in rows], indent=2))


if __name__ == "__main__":
    main()
