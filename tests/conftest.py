"""Shared fixtures: tiny configs that train in seconds on 2 CPU cores."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

from ifnd.config import resolve

torch.set_num_threads(min(2, os.cpu_count() or 1))


def tiny_values(tmp_path, **sections) -> dict:
    """A digits run at 16 px on 128 samples, batch 32, 2 epochs, no workers."""
    values = {
        "method": "simclr",
        "seed": 0,
        "output_dir": str(tmp_path / "run"),
        "device": "cpu",
        "data": {"name": "digits", "image_size": 16, "num_workers": 0, "max_train_samples": 128},
        "model": {"backbone": "small_cnn", "proj_hidden_dim": 32, "proj_dim": 16},
        "moco": {"queue_size": 64},
        "train": {"epochs": 2, "batch_size": 32, "lr": 0.3, "log_every_steps": 1},
        "knn": {"every": 1, "k": 10},
    }
    for section, updates in sections.items():
        if isinstance(updates, dict):
            values.setdefault(section, {}).update(updates)
        else:
            values[section] = updates
    return values


@pytest.fixture
def tiny_cfg(tmp_path):
    """Factory: ``tiny_cfg(method="moco", detection={...})`` -> resolved Config."""

    def make(**sections):
        return resolve(tiny_values(tmp_path, **sections))

    return make


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """RUN/checkpoints/last.pt of a 1-epoch SimCLR run on 128 digits at 16 px."""
    from ifnd.pretrain.task import PretrainTask
    from ifnd.runtime.loop import Engine

    run = tmp_path_factory.mktemp("pretrain") / "run"
    Engine(resolve({
        "output_dir": str(run), "device": "cpu",
        "data": {"name": "digits", "image_size": 16, "num_workers": 0, "max_train_samples": 128},
        "model": {"backbone": "small_cnn", "proj_hidden_dim": 32, "proj_dim": 16},
        "train": {"epochs": 1, "batch_size": 32}, "knn": {"k": 10},
    }), PretrainTask).fit()
    return run / "checkpoints" / "last.pt"


@pytest.fixture
def load_tool():
    """Factory: ``load_tool("detection_ceiling")`` -> the module ``tools/detection_ceiling.py`` (tools are scripts, not a package)."""

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "tools" / f"{name}.py")
        tool = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(tool)
        return tool

    return load
