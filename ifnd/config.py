"""Typed configuration: YAML files plus ``--set key=value`` overrides.

Every key the system understands is declared once in :data:`SCHEMA` with its default,
its type, its allowed values and one line of documentation. Loading a YAML file merges
it over the defaults; a key that is not in the schema, a value of the wrong type or a
value outside its choices is an error that names the key and the fix. The resolved
config is written into every run directory (:func:`save_config`).

Usage::

    cfg = load_config("configs/demo.yaml", overrides=["train.epochs=5"])
    cfg.train.epochs          # 5
    cfg.to_dict()             # nested plain dict
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key and the fix."""


@dataclass(frozen=True)
class Option:
    """One config key: default value, expected type, allowed values, documentation."""

    default: Any
    doc: str
    choices: tuple[Any, ...] | None = None
    # For list values: the type of each element.
    item_type: type | None = None


# Flat schema: dotted key -> Option. The single source of truth for every key; the
# commented reference `configs/default.yaml` is generated from it by
# `python -m ifnd config --defaults` and checked by a test.
SCHEMA: dict[str, Option] = {
    # --- run -------------------------------------------------------------------
    "method": Option("simclr", "Contrastive method.", ("simclr", "moco")),
    "seed": Option(0, "Seed for weights, data order and augmentations."),
    "output_dir": Option("runs/default", "Run directory: config.yaml, checkpoints/, metrics.json, TensorBoard events."),
    "device": Option("auto", "Where to train: auto picks cuda when available.", ("auto", "cpu", "cuda")),
    # --- data ------------------------------------------------------------------
    "data.name": Option("digits", "Training data set.", ("digits", "fashion_mnist", "imagefolder", "filelist")),
    "data.root": Option("", "Folder of the data (fashion_mnist: its files; imagefolder: root/class_x/img.jpg; filelist: base folder of the paths)."),
    "data.train_list": Option("", "filelist only: text file with one 'path label' per line for training."),
    "data.test_root": Option("", "imagefolder: folder of the test split (same layout); filelist: text file of the test list. Empty: no kNN monitor."),
    "data.image_size": Option(32, "Side of the square images fed to the encoder, in pixels."),
    "data.num_workers": Option(2, "DataLoader worker processes (0 = load in the main process)."),
    "data.on_corrupt": Option("skip", "Unreadable or empty image files: skip them with a warning count, or fail.", ("skip", "error")),
    "data.max_train_samples": Option(0, "Use only the first N training samples (0 = all); for quick runs."),
    # --- augmentation (lightly's SimCLRTransform / MoCoV2Transform) -------------
    "augment.min_scale": Option(0.2, "Smallest crop area fraction of RandomResizedCrop."),
    "augment.cj_prob": Option(0.8, "Probability of colour jitter."),
    "augment.cj_strength": Option(0.5, "Colour jitter strength."),
    "augment.gray_prob": Option(0.2, "Probability of random grayscale."),
    "augment.blur_prob": Option(0.0, "Probability of Gaussian blur (0.5 is usual at ImageNet resolution)."),
    "augment.hflip_prob": Option(0.5, "Probability of a horizontal flip."),
    "augment.normalize": Option(True, "Normalise with ImageNet mean and std."),
    # --- model -----------------------------------------------------------------
    "model.backbone": Option("small_cnn", "Encoder backbone.", ("small_cnn", "resnet18", "resnet50")),
    "model.cifar_stem": Option(True, "ResNets: 3x3 stride-1 first convolution and no max-pool, for small images."),
    "model.proj_hidden_dim": Option(512, "Hidden width of the projection head."),
    "model.proj_dim": Option(128, "Output width of the projection head (the embedding that the loss sees)."),
    "model.norm": Option("batch", "Normalisation layers: batch (BatchNorm) or group (GroupNorm; batch-independent, no BatchNorm in the heads).", ("batch", "group")),
    "model.sync_bn": Option(False, "Convert BatchNorm to SyncBatchNorm under DDP (CUDA only)."),
    # --- method parameters -----------------------------------------------------
    "simclr.temperature": Option(0.5, "SimCLR NT-Xent temperature."),
    "moco.temperature": Option(0.2, "MoCo v2 InfoNCE temperature."),
    "moco.momentum": Option(0.99, "EMA momentum of the key encoder."),
    "moco.queue_size": Option(4096, "Number of keys (with their dataset ids) in the MoCo queue."),
    # --- training --------------------------------------------------------------
    "train.epochs": Option(100, "Number of training epochs."),
    "train.batch_size": Option(256, "Images per step (per process under DDP)."),
    "train.optimizer": Option("sgd", "Optimizer; LARS for large batches.", ("sgd", "lars")),
    "train.lr": Option(0.06, "Learning rate for a global batch of 256; scaled linearly with the global batch."),
    "train.momentum": Option(0.9, "SGD / LARS momentum."),
    "train.weight_decay": Option(5e-4, "Weight decay."),
    "train.warmup_epochs": Option(0, "Epochs of linear LR warm-up before the cosine decay."),
    "train.amp": Option(True, "Mixed precision (bfloat16) on GPU; ignored on CPU."),
    "train.channels_last": Option(True, "channels_last memory format for model and images on GPU; ignored on CPU."),
    "train.checkpoint_every_steps": Option(0, "Also checkpoint every N steps inside an epoch (0 = only at epoch end and on Ctrl-C)."),
    "train.log_every_steps": Option(10, "TensorBoard scalar interval in steps."),
    # --- kNN monitor -----------------------------------------------------------
    "knn.every": Option(1, "Run the kNN monitor every N epochs (0 = only at the end)."),
    "knn.k": Option(200, "Neighbours of the weighted kNN monitor."),
    "knn.temperature": Option(0.1, "Temperature of the kNN vote weights exp(sim / T)."),
    "knn.baselines": Option(False, "At the end, also print kNN on raw pixels and on a randomly initialised encoder."),
    # --- FNE negatives in MoCo pretraining (ifnd/falseneg/bayes.py) ------------
    "negatives.sampler": Option("none", "MoCo only: re-weight (or sample) queue negatives by their Bayesian true-negative weight.", ("none", "fne")),
    "negatives.num_samples": Option(0, "0: weight every queue negative in the InfoNCE denominator; N > 0: draw N negatives per anchor instead."),
    "negatives.warmup_epochs": Option(1, "Epochs of plain InfoNCE before the sampler is used (its statistics still accumulate)."),
    "negatives.tau": Option(0.5, "Width of the closeness kernel exp(-(s - s_pos)^2 / (2 tau))."),
    "negatives.prior": Option(1e-4, "Prior probability that a negative is false."),
    "negatives.cut_down": Option(False, "Zero the weight of easy negatives (s <= positive mean - cut_margin)."),
    "negatives.cut_margin": Option(0.2, "Margin of the cut-down below the running positive mean."),
    "negatives.min_positives": Option(200, "Positive pairs seen in an epoch before the statistics are used."),
    # --- false-negative detection (IFND) ---------------------------------------
    "detection.mode": Option("none", "none: plain contrastive loss; ifnd: k-means pseudo-labels; oracle: true labels.", ("none", "ifnd", "oracle")),
    "detection.loss": Option("elimination", "Detected false negatives leave the denominator, or become positives.", ("elimination", "attraction")),
    "detection.features": Option("bank", "Cluster the embeddings stored during the last epoch (bank) or an extra centre-crop pass (pass).", ("bank", "pass")),
    "detection.num_clusters": Option([30, 60], "k of each granularity level.", item_type=int),
    "detection.hierarchical": Option(False, "Build coarser levels by clustering the finer level's centroids (labels nest)."),
    "detection.warmup_epochs": Option(10, "Epochs of plain training before the first clustering round."),
    "detection.cluster_every": Option(1, "Epochs between clustering rounds."),
    "detection.accept_start": Option(0.2, "Share of samples whose pseudo-labels are accepted at the first round."),
    "detection.accept_end": Option(1.0, "Share accepted at the last epoch."),
    "detection.accept_schedule": Option("linear", "How the accepted share grows.", ("linear", "step", "constant")),
    "detection.confidence": Option("softmax", "Confidence of a pseudo-label.", ("softmax", "margin")),
    "detection.confidence_temperature": Option(0.1, "Temperature of the softmax over centroid similarities."),
    "detection.kmeans_niter": Option(20, "k-means iterations."),
    "detection.kmeans_nredo": Option(1, "k-means restarts (the best objective is kept)."),
    "detection.kmeans_init": Option("random", "k-means initialisation (faiss runs k-means++ and afk-mc2 single-threaded: slow at large k; see tools/bench_kmeans.py).", ("random", "kmeans++", "afk-mc2")),
}


class Config:
    """Nested, read-only attribute view of a resolved config dict."""

    def __init__(self, data: dict[str, Any]):
        self._data = data

    def __getattr__(self, name: str) -> Any:
        try:
            value = self._data[name]
        except KeyError:
            raise AttributeError(f"config has no key {name!r}") from None
        return Config(value) if isinstance(value, dict) else value

    def get(self, dotted: str) -> Any:
        value: Any = self._data
        for part in dotted.split("."):
            value = value[part]
        return value

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self._data)

    def __repr__(self) -> str:
        return f"Config({self._data!r})"


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def _unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for dotted, value in flat.items():
        node = tree
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def _check_value(key: str, value: Any, option: Option) -> Any:
    """Return ``value`` coerced to the option's type, or raise ConfigError."""
    expected = type(option.default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if expected is list:
        if not isinstance(value, list):
            value = [value]
        bad = [v for v in value if option.item_type and not isinstance(v, option.item_type)]
        if bad or not value:
            raise ConfigError(f"config key {key!r} must be a non-empty list of {option.item_type.__name__}, got {value!r}")
    elif not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ConfigError(
            f"config key {key!r} must be of type {expected.__name__}, got {value!r} ({type(value).__name__})"
        )
    if option.choices is not None and value not in option.choices:
        raise ConfigError(f"config key {key!r} must be one of {list(option.choices)}, got {value!r}")
    return value


def _unknown_key_error(key: str, where: str, schema: dict[str, Option]) -> ConfigError:
    import difflib

    close = difflib.get_close_matches(key, schema.keys(), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown config key {key!r} in {where}.{hint} Known keys: python -m ifnd config --defaults [--kind pretrain|eval|itm]")


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``key=value`` and parse the value as YAML (``3`` -> int, ``[1,2]`` -> list)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw) if raw.strip() else ""


def resolve(
    values: dict[str, Any], overrides: Iterable[str] = (), where: str = "config", schema: dict[str, Option] = SCHEMA
) -> Config:
    """Merge nested ``values`` and ``key=value`` overrides over the schema's defaults and validate."""
    flat = {key: option.default for key, option in schema.items()}
    sources = [(k, v, where) for k, v in _flatten(values).items()]
    sources += [(*parse_override(o), "--set") for o in overrides]
    for key, value, source in sources:
        if key not in schema:
            raise _unknown_key_error(key, source, schema)
        flat[key] = _check_value(key, value, schema[key])
    return Config(_unflatten(flat))


def load_config(
    path: str | Path | None, overrides: Sequence[str] = (), schema: dict[str, Option] = SCHEMA
) -> Config:
    """Read a YAML config (or only defaults when ``path`` is None) and apply overrides.

    ``schema`` is :data:`SCHEMA` for pretraining; other stages pass their own.
    """
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} not found; pass an existing YAML file, e.g. configs/demo.yaml")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {str(path)!r} is not valid YAML: {err}") from err
        if not isinstance(values, dict):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping of keys, got {type(values).__name__}")
    return resolve(values, overrides, where=str(path) if path else "config", schema=schema)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def defaults_yaml(schema: dict[str, Option] = SCHEMA) -> str:
    """Every key with its default and documentation, as commented YAML."""
    lines = ["# Every config key, with its default. Generated by `python -m ifnd config --defaults`."]
    section = None
    for key, option in schema.items():
        parts = key.split(".")
        if len(parts) == 2 and parts[0] != section:
            section = parts[0]
            lines.append(f"{section}:")
        elif len(parts) == 1:
            section = None
        indent = "  " if len(parts) == 2 else ""
        choices = f" One of: {', '.join(map(str, option.choices))}." if option.choices else ""
        lines.append(f"{indent}# {option.doc}{choices}")
        value = yaml.safe_dump({parts[-1]: option.default}, default_flow_style=True).strip()[1:-1]
        lines.append(f"{indent}{value}")
    return "\n".join(lines) + "\n"
