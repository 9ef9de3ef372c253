"""Image-text matching in a study (``task: itm``): how one ``itm-train`` run is scored, and its tables' columns.

A run is scored by its best-validation checkpoint (``best.pt``; ``last.pt`` when the run has no
validation split) on the test split: RSUM with the one annotated image, and extended RSUM
counting every image a caption fits where the data know them (the demo). Its row also keeps the
last epoch's share of same-class negatives and FNE's ``fne/...`` statistics (NaN for other
samplers), and the training data's measured false-negative density (``data_density.train`` of
``metrics.json``: images a caption fits, share of a caption's candidate images that fit it).

Variants named ``<row>@<column>`` (e.g. ``fne@fits46``) are also tabled as a grid, one table
per score: rows in the order they first appear, columns likewise.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ifnd.itm.evaluate import evaluate_checkpoint

SCORES = ("rsum", "ext_rsum")
"""The score columns; the first is the one compared with the baseline."""
LABELS = ("RSUM", "extended RSUM")
DETAILS = (
    ("same_class_negatives_pct", "same-class neg %", 1),
    ("fne/ready_share", "ready share", 3),
    ("fne/above_switch_share", "past switch", 4),
    ("fne/weight_true_fn", "w(true FN)", 3),
    ("fne/weight_true_neg", "w(true neg)", 3),
    ("fne/pos_mean", "pos mean", 3),
    ("fne/neg_mean", "neg mean", 3),
    ("fne/reliable_pairs", "stat pairs", 0),
    ("images_per_caption", "images/caption", 1),
    ("fn_share_t2i", "FN share", 4),
)
"""``(row key, heading, digits)`` of the summary columns after the scores."""
NOTE = ("Scores: the best-validation checkpoint on the test split (RSUM: R@1 + R@5 + R@10 both ways; extended: every "
        "image a caption fits counts). Last epoch: same-class negatives % (of the negatives the loss used), FNE's "
        "share of sampler calls with ready statistics, share of candidates past the Bayes switch, mean draw weight of "
        "true false negatives and of true negatives, the two Gaussians' means, the positives fed to the statistics. "
        "Data: images a training caption fits and the share of a caption's candidate images that fit it.")


def itm_row(run_dir: Path, metrics: dict[str, Any]) -> dict[str, float]:
    """Test scores of a finished ``itm-train`` run, its last epoch's figures and its data's density."""
    checkpoint = run_dir / "checkpoints" / "best.pt"
    if not checkpoint.is_file():
        checkpoint = run_dir / "checkpoints" / "last.pt"
    test, _ = evaluate_checkpoint(checkpoint, "test")
    last = metrics["history"][-1] if metrics["history"] else {}
    density = metrics.get("data_density", {}).get("train", {})
    row = {"rsum": test["rsum"], "ext_rsum": test.get("ext_rsum", math.nan)}
    for key, _, _ in DETAILS:
        row[key] = density.get(key, last.get(key, math.nan))
    return row


def grid_tables(variants: list[str], cell: Any) -> str:
    """Markdown tables of the ``<row>@<column>`` variants, one per score; empty when no name has an ``@``.

    Args:
        variants: the study's variant names, in order.
        cell: ``cell(variant, score_key) -> str``, the table entry of one variant.
    """
    named = [v.split("@", 1) for v in variants if "@" in v]
    if not named:
        return ""
    rows, columns = list(dict.fromkeys(r for r, _ in named)), list(dict.fromkeys(c for _, c in named))
    tables = []
    for key, label in zip(SCORES, LABELS):
        lines = [f"\n### {label} by setting\n", "| variant | " + " | ".join(columns) + " |",
                 "|---" * (len(columns) + 1) + "|"]
        for row in rows:
            lines.append(f"| {row} | " + " | ".join(cell(f"{row}@{c}", key) if f"{row}@{c}" in variants else ""
                                                    for c in columns) + " |")
        tables.append("\n".join(lines) + "\n")
    return "".join(tables)
