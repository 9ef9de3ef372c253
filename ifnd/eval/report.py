"""Compare pretraining runs: a markdown table of their results and PNG training curves.

A run directory holds ``config.yaml`` and ``metrics.json`` (written by
``python -m ifnd pretrain``) and, once evaluated, ``eval/*/metrics.json`` (written by
the ``linear``, ``knn`` and ``semisup`` commands, each naming its ``protocol``).
Missing values show as an em dash.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ifnd.config import read_yaml
from ifnd.eval.checkpoints import EvalError

MISSING = "—"

COLUMNS = ("run", "method", "detection", "kNN top-1", "linear top-1", "1% top-1", "10% top-1",
           "FN precision", "FN recall", "pretrain time (s)")

# Plot file stem -> (title, y label, history keys drawn as solid / dashed lines).
CURVES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "loss": ("contrastive loss", "loss", ("loss",)),
    "knn_top1": ("kNN top-1 (monitor)", "top-1 %", ("knn_top1",)),
    "fn_precision_recall": ("false-negative detection (solid: precision, dashed: recall)", "precision / recall",
                            ("fn_precision", "fn_recall")),
    "accepted_share": ("accepted pseudo-label share", "share", ("round/accepted_share",)),
}


@dataclass
class RunResults:
    """What a run directory holds: its name, pretraining config and metrics, and its evaluations."""

    name: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    evals: list[dict[str, Any]] = field(default_factory=list)  # eval metrics.json contents, oldest first


def load_run(run_dir: str | Path) -> RunResults:
    """Read ``config.yaml``, ``metrics.json`` and every ``eval/*/metrics.json`` of a run directory.

    Raises:
        EvalError: the folder is not a pretraining run directory.
    """
    run_dir = Path(run_dir)
    config_file, metrics_file = run_dir / "config.yaml", run_dir / "metrics.json"
    if not (config_file.is_file() and metrics_file.is_file()):
        raise EvalError(
            f"{str(run_dir)!r} is not a run directory (no config.yaml and metrics.json); "
            "pass output_dir folders of `python -m ifnd pretrain`"
        )
    evals = sorted(run_dir.glob("eval/*/metrics.json"), key=lambda p: p.stat().st_mtime)
    return RunResults(
        name=run_dir.name,
        config=read_yaml(config_file, "run config") or {},
        metrics=json.loads(metrics_file.read_text()),
        evals=[json.loads(p.read_text()) for p in evals],
    )


def eval_top1(run: RunResults, protocol: str, fraction: float | None = None) -> float:
    """Top-1 (%) of the newest evaluation of ``protocol`` (and ``fraction`` for semisup); NaN when none."""
    for metrics in reversed(run.evals):
        if metrics.get("protocol") == protocol and (
            fraction is None or math.isclose(metrics.get("fraction", math.nan), fraction)
        ):
            return float(metrics["top1"])
    return math.nan


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return format(value, spec)


def detection_settings(config: dict[str, Any]) -> str:
    """``mode/loss/features`` of ``config['detection']``, or ``none``."""
    det = config.get("detection", {})
    mode = det.get("mode", "none")
    return mode if mode == "none" else f"{mode}/{det.get('loss')}/{det.get('features')}"


def summary_row(run: RunResults) -> list[str]:
    """The cells of :data:`COLUMNS` for one run."""
    knn = eval_top1(run, "knn")
    if math.isnan(knn):  # no `knn` evaluation yet: the pretraining monitor's final value
        knn = run.metrics.get("knn_top1", math.nan)
    return [
        run.name,
        str(run.config.get("method", run.metrics.get("method", MISSING))),
        detection_settings(run.config),
        _fmt(knn, ".2f"),
        _fmt(eval_top1(run, "linear"), ".2f"),
        _fmt(eval_top1(run, "semisup", 0.01), ".2f"),
        _fmt(eval_top1(run, "semisup", 0.1), ".2f"),
        _fmt(run.metrics.get("fn_precision"), ".3f"),
        _fmt(run.metrics.get("fn_recall"), ".3f"),
        _fmt(run.metrics.get("train_time_s"), ".0f"),
    ]


def markdown_table(runs: Sequence[RunResults]) -> str:
    """A markdown table with one row per run (columns: :data:`COLUMNS`)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(summary_row(run)) + " |" for run in runs]
    return "\n".join(lines) + "\n"


def curve(history: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """``(epochs done, values)`` of ``key`` over the records of a training history that have a finite value."""
    points = [(h["epoch"] + 1, float(h[key])) for h in history
              if isinstance(h.get(key), (int, float)) and math.isfinite(h[key])]
    return [e for e, _ in points], [v for _, v in points]


def plot_curves(runs: Sequence[RunResults], out_dir: str | Path) -> list[Path]:
    """One PNG per entry of :data:`CURVES` that some run has data for, one colour per run.

    Returns the written paths.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, (title, ylabel, keys) in CURVES.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        drawn = False
        for colour, run in enumerate(runs):
            for key, style in zip(keys, ("-", "--")):
                epochs, values = curve(run.metrics.get("history", []), key)
                if epochs:
                    ax.plot(epochs, values, style, color=f"C{colour}", marker=".", label=f"{run.name} {key}")
                    drawn = True
        if drawn:
            ax.set(title=title, xlabel="epoch", ylabel=ylabel)
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
            fig.tight_layout()
            fig.savefig(out_dir / f"{stem}.png", dpi=100)
            written.append(out_dir / f"{stem}.png")
        plt.close(fig)
    return written
