"""Command line: ``python -m ifnd <command> ...``.

Commands:
    pretrain   contrastive pretraining (SimCLR / MoCo v2) with false-negative detection
    config     print every config key with its default and documentation
    linear     linear probe on a frozen pretrained backbone
    knn        weighted kNN on frozen features
    semisup    fine-tune on a 1% / 10% class-balanced labelled subset
    report     markdown table and training-curve plots of several runs
    itm-train  image-text matching with FNE or hardest-negative triplet loss
    itm-eval   image-text retrieval R@1/5/10 and RSUM
    study      every variant x seed of a study file (resumable): results.csv, summary.md, plots
"""

from __future__ import annotations

import argparse
import logging
import math
import shlex
import sys
from typing import Any, Sequence

from ifnd.config import ConfigError, add_config_args, defaults_yaml, load_config
from ifnd.eval import commands as eval_commands
from ifnd.itm import commands as itm_commands
from ifnd.runtime.run import add_overwrite_arg


def cmd_pretrain(args: argparse.Namespace) -> int:
    from ifnd.pretrain.task import PretrainTask
    from ifnd.runtime import distributed as dist
    from ifnd.runtime.loop import Engine

    cfg = load_config(args.config, args.overrides)
    engine = Engine(cfg, PretrainTask, resume=args.resume, overwrite=args.overwrite)
    metrics = engine.fit()
    if not dist.is_main():  # the kNN figures and the table come from rank 0
        return 0
    rows = [("pretrained encoder", metrics["knn_top1"])]
    if cfg.knn.baselines and not metrics["knn_not_scored"]:
        rows += knn_baseline_rows(engine.task)
    print_table(cfg, metrics, rows)
    return 0


def knn_baseline_rows(task: Any) -> list[tuple[str, float]]:
    """kNN top-1 on raw pixels and on a randomly initialised encoder of the same architecture."""
    import torch

    from ifnd.data.build import eval_loader
    from ifnd.metrics.knn import Flatten, extract_features, knn_accuracy
    from ifnd.pretrain.methods import build_model

    cfg = task.cfg
    args = (cfg.data.image_size, cfg.augment.normalize, 256, cfg.data.num_workers)
    torch.manual_seed(cfg.seed)
    encoders = [("raw pixels", Flatten()), ("random-init encoder", build_model(cfg).backbone.to(task.device))]
    rows = []
    for name, encoder in encoders:
        train = extract_features(encoder, eval_loader(task.train_src, *args), task.device)
        test = extract_features(encoder, eval_loader(task.test_src, *args), task.device)
        rows.append((name, knn_accuracy(*train, *test, cfg.knn.k, cfg.knn.temperature)["top1"]))
    return rows


def print_table(cfg: Any, metrics: dict[str, Any], rows: list[tuple[str, float]]) -> None:
    print(f"\nrun: {cfg.output_dir}  method={cfg.method}  detection={cfg.detection.mode}  "
          f"epochs={metrics['epochs_done']}  train time={metrics['train_time_s']:.0f}s")
    if not math.isnan(metrics.get("fn_precision", math.nan)):
        print(f"false negatives detected in the last epoch: precision={metrics['fn_precision']:.3f} "
              f"recall={metrics['fn_recall']:.3f} accepted share={metrics['accepted_share']:.2f}")
    if metrics.get("knn_not_scored"):
        print(f"kNN not scored: {metrics['knn_not_scored']}")
        return
    print(f"\n| features ({cfg.data.name}, kNN k={cfg.knn.k}) | top-1 % |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value:.2f} |")


def config_schemas() -> dict:
    """Config schema of each kind of job."""
    from ifnd.config import SCHEMA
    from ifnd.eval.schema import EVAL_SCHEMA
    from ifnd.itm.schema import ITM_SCHEMA

    return {"pretrain": SCHEMA, "eval": EVAL_SCHEMA, "itm": ITM_SCHEMA}


def cmd_config(args: argparse.Namespace) -> int:
    schema = config_schemas()[args.kind]
    if args.defaults:
        print(defaults_yaml(schema), end="")
    else:
        import yaml

        print(yaml.safe_dump(load_config(args.config, args.overrides, schema=schema).to_dict(), sort_keys=False), end="")
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from ifnd.study.run import main_study

    if not args.config:
        raise ConfigError("ifnd study needs --config STUDY.yaml (see configs/studies/)")
    return main_study(args.config, args.overrides, args.only, args.seeds)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ifnd", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pretrain", help="contrastive pretraining")
    add_config_args(p)
    p.add_argument("--resume", help="'auto' (latest checkpoint of the run directory) or a checkpoint path")
    add_overwrite_arg(p)
    p.set_defaults(func=cmd_pretrain)
    p = sub.add_parser("config", help="print the resolved config, or every key's default")
    add_config_args(p)
    p.add_argument("--defaults", action="store_true", help="every key with its default and documentation")
    p.add_argument("--kind", choices=["pretrain", "eval", "itm"], default="pretrain",
                   help="which job's keys: pretrain (default), eval (linear/knn/semisup) or itm (itm-train)")
    p.set_defaults(func=cmd_config)
    p = sub.add_parser("study", help="run (or continue) every variant x seed of a study file; results.csv, summary.md, plots")
    add_config_args(p, example="output_dir=runs/my_study")
    p.add_argument("--only", help="comma-separated variants to run now (the summary covers every finished run)")
    p.add_argument("--seeds", help="comma-separated seeds of the study to run now, e.g. to share a study between "
                   "processes (the summary covers every finished run)")
    p.set_defaults(func=cmd_study)
    eval_commands.add_subcommands(sub)
    itm_commands.add_subcommands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    from ifnd.data.sources import DataError
    from ifnd.runtime import distributed as dist
    from ifnd.runtime.checkpoint import CheckpointError
    from ifnd.runtime.loop import EvaluationFailed, Interrupted, TrainingDiverged

    try:
        code = args.func(args)
        dist.shutdown()
        return code
    except (ConfigError, DataError, CheckpointError, TrainingDiverged, EvaluationFailed) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Interrupted):
        print(f"interrupted: the checkpoint is saved; {continue_hint(args, argv)}", file=sys.stderr)
        return 130


def continue_hint(args: argparse.Namespace, argv: Sequence[str] | None) -> str:
    """How to continue an interrupted command: a study resumes by running the same command again (it
    refuses ``--resume``); every other command takes ``--resume auto``."""
    if args.command == "study":
        words = list(sys.argv[1:] if argv is None else argv)
        return f"continue with the same command: {shlex.join(['python', '-m', 'ifnd', *words])}"
    return "continue with --resume auto"
