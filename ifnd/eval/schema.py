"""Config schema of the evaluation commands (``linear``, ``knn``, ``semisup``).

:data:`EVAL_SCHEMA` reuses the pretraining :data:`ifnd.config.SCHEMA` entries that
describe the data, the encoder and the run, and adds the ``linear.*`` and
``semisup.*`` protocol keys. :func:`load_eval_config` layers, from lowest to highest
priority: the schema defaults, the data/model/augment/knn settings saved in the
checkpoint, an optional YAML file, and ``--set`` overrides; so ``--checkpoint`` alone
evaluates on the data (and with the kNN monitor's k) the encoder was pretrained with.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

from ifnd.config import SCHEMA, Config, Option, load_config

# Sections whose values are taken from the checkpoint's saved config.
INHERITED_SECTIONS = ("data", "model", "augment", "knn")
_SHARED_KEYS = ("device", "seed", "cpu_threads", "dist.timeout_minutes", "knn.k", "knn.temperature", "augment.normalize", "augment.min_scale", "augment.hflip_prob")

EVAL_SCHEMA: dict[str, Option] = {
    **{key: option for key, option in SCHEMA.items() if key in _SHARED_KEYS or key.split(".")[0] in ("data", "model")},
    "output_dir": dataclasses.replace(
        SCHEMA["output_dir"],
        default="",
        doc="Evaluation folder: metrics.json, config.yaml, TensorBoard events (empty = RUN/eval/<protocol> next to the checkpoint).",
    ),
    # --- linear probe (frozen backbone) -------------------------------------------
    "linear.protocol": Option(
        "cached",
        "cached: the quick probe (L2-normalised features, cosine learning rate, see linear.cache_features); ranks "
        "encoders, not comparable with published tables. moco: MoCo's main_lincls (random-resized crops and flips "
        "every epoch, unnormalised features, steps at linear.lr_steps, Resize(linear.eval_resize) + CenterCrop "
        "test; configs/imagenet_linear.yaml), the protocol of the IFND, MoCo and PCL tables; runs under torchrun.",
        ("cached", "moco"),
    ),
    "linear.epochs": Option(100, "Epochs of linear classifier training.", positive=True),
    "linear.batch_size": Option(256, "Images (or cached feature vectors) per step and process (under torchrun the global batch is this x the processes).", positive=True),
    "linear.lr": Option(30.0, "Initial SGD learning rate (cached: cosine decay to 0; moco: divided by 10 at linear.lr_steps).", positive=True),
    "linear.lr_steps": Option([60, 80], "protocol=moco: epochs at which the learning rate is divided by 10.", item_type=int),
    "linear.min_scale": Option(0.08, "protocol=moco: smallest area fraction of the training crops (torchvision's default, as main_lincls)."),
    "linear.eval_resize": Option(256, "protocol=moco: shorter side of the test images before the centre crop of data.image_size (256 for 224)."),
    "linear.momentum": Option(0.9, "SGD momentum."),
    "linear.weight_decay": Option(0.0, "Weight decay of the linear classifier."),
    "linear.cache_features": Option(
        True,
        "protocol=cached: encode the centre-cropped images once and train on the cached features (fast); "
        "false: encode randomly cropped and flipped images at every epoch.",
    ),
    # --- semi-supervised fine-tuning (whole network) ------------------------------
    "semisup.epochs": Option(30, "Fine-tuning epochs.", positive=True),
    "semisup.batch_size": Option(256, "Labelled images per step.", positive=True),
    "semisup.lr_backbone": Option(0.01, "Initial SGD learning rate of the backbone (cosine decay to 0).", positive=True),
    "semisup.lr_head": Option(0.1, "Initial SGD learning rate of the new linear head (cosine decay to 0).", positive=True),
    "semisup.weight_decay": Option(0.0, "Weight decay of backbone and head."),
    "semisup.fraction": Option(0.01, "Share of the training set that is labelled, the same count in every class."),
    "semisup.split_file": Option(
        "",
        "Text file naming the labelled images, one per line (image path relative to data.root, or the bare file "
        "name as in SimCLR's ImageNet 1%/10% lists; the dataset index for in-memory data). Empty: draw a "
        "class-balanced subset of semisup.fraction with the seed.",
    ),
}


def _nested_get(tree: dict[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def checkpoint_schema(saved_config: dict[str, Any] | None) -> dict[str, Option]:
    """:data:`EVAL_SCHEMA` whose :data:`INHERITED_SECTIONS` defaults are a checkpoint's saved values.

    Keys the saved config lacks (older runs, plain state dicts: ``saved_config=None``)
    keep the schema default.
    """
    schema = dict(EVAL_SCHEMA)
    for key, option in EVAL_SCHEMA.items():
        if saved_config is None or key.split(".")[0] not in INHERITED_SECTIONS:
            continue
        found, value = _nested_get(saved_config, key)
        if found:
            schema[key] = dataclasses.replace(option, default=value)
    return schema


def load_eval_config(
    path: str | Path | None, overrides: Sequence[str] = (), saved_config: dict[str, Any] | None = None
) -> Config:
    """Resolve an evaluation config: defaults < checkpoint's :data:`INHERITED_SECTIONS` < YAML file < overrides."""
    return load_config(path, overrides, schema=checkpoint_schema(saved_config))
