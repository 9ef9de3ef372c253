"""Evaluation sub-commands of ``python -m ifnd``:

    linear   --checkpoint CKPT [--config FILE] [--set KEY=VALUE ...]
    knn      --checkpoint CKPT [--config FILE] [--set KEY=VALUE ...]
    semisup  --checkpoint CKPT [--fraction 0.01|0.1] [--split-file FILE] [--config FILE] [--set ...]
    report   RUN [RUN ...] [--plots DIR]

Each evaluation writes ``metrics.json`` (top1, top5, protocol, checkpoint, wall time,
per-epoch history), its resolved ``config.yaml`` and TensorBoard events into its output
folder (default ``RUN/eval/<protocol>``; ``--set output_dir=...``) and prints the result.
Register them with ``add_subcommands(parser.add_subparsers(...))``.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import Dataset

from ifnd.config import Config, ConfigError, add_config_args
from ifnd.data.sources import DataError
from ifnd.eval.checkpoints import (
    EvalError,
    build_encoder,
    default_output_dir,
    read_encoder_weights,
)
from ifnd.runtime.checkpoint import CheckpointError
from ifnd.runtime.loop import EvaluationFailed, TrainingDiverged
from ifnd.runtime.run import RunDir, add_overwrite_arg, claim_run_dir

Command = Callable[[argparse.Namespace], int]


@dataclass
class EvalContext:
    """Everything an evaluation protocol needs."""

    cfg: Config
    encoder: nn.Module  # [B, 3, S, S] -> [B, feat_dim], on `device`
    feat_dim: int
    train_src: Dataset
    test_src: Dataset
    device: torch.device
    out_dir: Path
    run: RunDir  # config.yaml, metrics.json and TensorBoard of out_dir
    resume: str | None  # --resume of the protocols that train (linear, semisup)


def _reports_errors(func: Command) -> Command:
    """Print ``error: ...`` and return 2 for bad input instead of a traceback."""

    @functools.wraps(func)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except (EvalError, ConfigError, DataError, CheckpointError, TrainingDiverged, EvaluationFailed) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2

    return wrapper


def semisup_name(fraction: float) -> str:
    """Output folder name of a semi-supervised run: ``semisup_1pct`` for 0.01, ``semisup_10pct`` for 0.1."""
    return f"semisup_{fraction * 100:g}pct"


def run_evaluation(
    args: argparse.Namespace,
    protocol: str,
    body: Callable[[EvalContext], dict[str, Any]],
    overrides: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Load the encoder and data, run ``body``, write ``metrics.json`` and print the result.

    ``body`` returns at least ``top1`` and ``top5``; the rest of its dict is stored too.
    ``overrides`` (``key=value``) apply after ``--set``.
    """
    from ifnd.data.build import build_sources
    from ifnd.eval.schema import load_eval_config
    from ifnd.runtime.distributed import pick_device
    from ifnd.runtime.seeding import seed_everything

    weights = read_encoder_weights(args.checkpoint)
    all_overrides = [*args.overrides, *overrides]
    cfg = load_eval_config(args.config, all_overrides, weights.saved_config)
    name = semisup_name(cfg.semisup.fraction) if protocol == "semisup" else protocol
    if not cfg.output_dir:
        out = default_output_dir(args.checkpoint, name)
        cfg = load_eval_config(args.config, [*all_overrides, f"output_dir={json.dumps(str(out))}"], weights.saved_config)
    if hasattr(args, "resume"):  # linear and semisup train into output_dir (and resume); knn only writes its result
        claim_run_dir(cfg.output_dir, args.resume, args.overwrite)
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    encoder, feat_dim = build_encoder(weights, cfg.model.backbone, cfg.model.cifar_stem, cfg.model.norm)
    train_src, test_src = build_sources(cfg)
    if test_src is None:
        raise EvalError(f"data.name={cfg.data.name} has no test split; set data.test_root to the test images")
    out_dir = Path(cfg.output_dir)
    run = RunDir(cfg)
    start = time.perf_counter()
    try:
        result = body(EvalContext(cfg, encoder.to(device), feat_dim, train_src, test_src, device, out_dir, run,
                                  getattr(args, "resume", None)))
        run.scalars.add({f"test_{key}": result[key] for key in ("top1", "top5")}, 0, protocol)
    finally:
        run.close()
    metrics = {"protocol": protocol, "top1": result["top1"], "top5": result["top5"],
               "checkpoint": str(Path(args.checkpoint).resolve()), "wall_time_s": time.perf_counter() - start,
               **{k: v for k, v in result.items() if k not in ("top1", "top5")}}
    run.write_metrics(metrics)
    print(f"{name}: top-1 {metrics['top1']:.2f}%  top-5 {metrics['top5']:.2f}%  "
          f"({metrics['wall_time_s']:.1f} s) -> {out_dir / 'metrics.json'}")
    return metrics


@_reports_errors
def cmd_linear(args: argparse.Namespace) -> int:
    from ifnd.eval.linear import linear_probe

    def body(ctx: EvalContext) -> dict[str, Any]:
        result = linear_probe(ctx.encoder, ctx.feat_dim, ctx.train_src, ctx.test_src, ctx.cfg, ctx.device, ctx.run,
                              ctx.resume)
        return {**result, "linear_protocol": ctx.cfg.linear.protocol, "cache_features": ctx.cfg.linear.cache_features}

    run_evaluation(args, "linear", body)
    return 0


@_reports_errors
def cmd_knn(args: argparse.Namespace) -> int:
    from ifnd.metrics.knn import knn_accuracy
    from ifnd.eval.linear import encode

    def body(ctx: EvalContext) -> dict[str, Any]:
        train = encode(ctx.encoder, ctx.train_src, ctx.cfg, ctx.device)
        test = encode(ctx.encoder, ctx.test_src, ctx.cfg, ctx.device)
        knn = ctx.cfg.knn
        return {**knn_accuracy(*train, *test, knn.k, knn.temperature), "k": knn.k, "temperature": knn.temperature}

    run_evaluation(args, "knn", body)
    return 0


@_reports_errors
def cmd_semisup(args: argparse.Namespace) -> int:
    from ifnd.eval.semisup import finetune, format_split, labelled_subset

    def body(ctx: EvalContext) -> dict[str, Any]:
        indices, ids = labelled_subset(ctx.train_src, ctx.cfg)
        split_file = ctx.out_dir / "split.txt"
        split_file.write_text(format_split(ids))
        result = finetune(ctx.encoder, ctx.feat_dim, ctx.train_src, ctx.test_src, indices, ctx.cfg, ctx.device,
                          ctx.run, ctx.resume)
        return {**result, "fraction": ctx.cfg.semisup.fraction, "labelled": len(indices),
                "split_file": str(split_file), "split_source": ctx.cfg.semisup.split_file or f"seed {ctx.cfg.seed}"}

    overrides = []
    if args.fraction is not None:
        overrides.append(f"semisup.fraction={args.fraction!r}")
    if args.split_file is not None:
        overrides.append(f"semisup.split_file={json.dumps(args.split_file)}")
    run_evaluation(args, "semisup", body, tuple(overrides))
    return 0


@_reports_errors
def cmd_report(args: argparse.Namespace) -> int:
    from ifnd.eval.report import load_run, markdown_table, plot_curves

    runs = [load_run(path) for path in args.runs]
    print(markdown_table(runs), end="")
    if args.plots:
        for path in plot_curves(runs, args.plots):
            print(f"wrote {path}")
    return 0


def _add_eval_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True,
                        help="RUN/checkpoints/last.pt of a pretraining run, or a torchvision ResNet state dict")
    add_config_args(parser, example="linear.epochs=10")


def _add_resume_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--resume", help="'auto' (the evaluation folder's last checkpoint) or a checkpoint path")
    add_overwrite_arg(parser)


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    """Add the ``linear``, ``knn``, ``semisup`` and ``report`` parsers; each sets ``func(args) -> exit code``."""
    p = sub.add_parser("linear", help="linear probe on the frozen backbone (MoCo protocol)")
    _add_eval_args(p)
    _add_resume_arg(p)
    p.set_defaults(func=cmd_linear)
    p = sub.add_parser("knn", help="weighted kNN classification on the frozen backbone")
    _add_eval_args(p)
    p.set_defaults(func=cmd_knn)
    p = sub.add_parser("semisup", help="fine-tune backbone + linear head on a labelled subset (1%% / 10%%)")
    _add_eval_args(p)
    _add_resume_arg(p)
    p.add_argument("--fraction", type=float, help="labelled share of the training set, e.g. 0.01 or 0.1 (semisup.fraction)")
    p.add_argument("--split-file", help="file naming the labelled images, one per line (semisup.split_file)")
    p.set_defaults(func=cmd_semisup)
    p = sub.add_parser("report", help="markdown table and training-curve plots of pretraining runs")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories (output_dir of pretrain)")
    p.add_argument("--plots", metavar="DIR", help="write PNG training curves into DIR")
    p.set_defaults(func=cmd_report)
