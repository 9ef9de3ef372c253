from pathlib import Path

import pytest

from ifnd.config import (
    SCHEMA,
    ConfigError,
    defaults_yaml,
    load_config,
    parse_override,
    resolve,
)

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_and_nested_access():
    cfg = resolve({})
    assert cfg.method == "simclr"
    assert cfg.train.epochs == SCHEMA["train.epochs"].default
    assert cfg.get("detection.num_clusters") == [30, 60]


def test_override_parses_yaml_values():
    cfg = resolve({}, ["train.epochs=7", "detection.num_clusters=[5, 10]", "train.lr=1"])
    assert cfg.train.epochs == 7
    assert cfg.detection.num_clusters == [5, 10]
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert parse_override("output_dir=runs/x") == ("output_dir", "runs/x")


def test_unknown_key_is_an_error_with_a_suggestion():
    with pytest.raises(ConfigError, match="unknown config key 'train.epoch'.*'train.epochs'"):
        resolve({"train": {"epoch": 3}})
    with pytest.raises(ConfigError, match="--set"):
        resolve({}, ["nope.key=1"])


def test_wrong_type_and_choice_are_errors():
    with pytest.raises(ConfigError, match="train.epochs.*int"):
        resolve({"train": {"epochs": "ten"}})
    with pytest.raises(ConfigError, match="must be one of"):
        resolve({"method": "byol"})
    with pytest.raises(ConfigError, match="list of int"):
        resolve({"detection": {"num_clusters": ["a"]}})


@pytest.mark.parametrize("key", ["accept_start", "accept_end"])
def test_accepted_shares_outside_0_1_are_refused_when_the_config_loads(key):
    with pytest.raises(ConfigError, match=f"detection.{key}.*must lie in"):
        resolve({"detection": {"mode": "ifnd", key: 1.5}})
    assert getattr(resolve({"detection": {"mode": "ifnd", key: 0.0}}).detection, key) == 0.0


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


def test_every_shipped_config_loads():
    from ifnd.cli import config_schemas

    schemas = config_schemas()
    files = sorted((ROOT / "configs").glob("*.yaml"))
    assert files
    for path in files:
        kind = path.name.split("_")[0] if path.name.startswith(("eval_", "itm_")) else "pretrain"
        kind = "eval" if path.stem.endswith("_linear") else kind  # imagenet_linear.yaml: the name
        load_config(path, schema=schemas[kind])


def test_default_yaml_is_generated_from_the_schema():
    shipped = (ROOT / "configs" / "default.yaml").read_text()
    assert shipped == defaults_yaml(), "regenerate with: python -m ifnd config --defaults > configs/default.yaml"


def test_every_experiment_file_resolves_and_its_overrides_read_back():
    from pathlib import Path

    import yaml

    from ifnd.config import SCHEMA, format_override, load_experiment, parse_override
    from ifnd.itm.schema import ITM_SCHEMA

    files = sorted(Path(__file__).resolve().parents[1].glob("configs/experiments/*.yaml"))
    assert len(files) >= 5  # one per measurement in docs/results.md (the FNE table is a study file now)
    for path in files:
        schema = ITM_SCHEMA if "fne" in path.stem else SCHEMA
        settings = [k for k in yaml.safe_load(path.read_text()) if k != "base"]
        experiment = load_experiment(path, settings, schema=schema)
        assert experiment.config(experiment.base_overrides()).to_dict() == experiment.config().to_dict(), path
    for value in ("plain", "", "true", 1e-05, [10, 20], False, 0.3):
        assert parse_override(format_override("k", value))[1] == value
    with pytest.raises(ConfigError, match="unknown"):
        load_experiment(files[0], ["no_such_key"])
