"""Config loading: shipped files, overrides, strict keys and types, validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from anomaly_ssl.config import Config
from anomaly_ssl.config_loader import (
    SHIPPED_CONFIG_DIR,
    all_keys,
    config_from_dict,
    config_to_dict,
    dump_config,
    load_config,
)
from anomaly_ssl.errors import ConfigError

SHIPPED = sorted(p.stem for p in SHIPPED_CONFIG_DIR.glob("*.yaml"))


def test_required_shipped_configs_exist():
    assert {"default", "tiny", "shop", "hdfs", "taobao"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_loads_and_validates(name):
    cfg = load_config(name)
    assert isinstance(cfg, Config)


def test_tiny_inherits_shop_data_settings():
    tiny, shop = load_config("tiny"), load_config("shop")
    assert tiny.data == shop.data
    assert tiny.model.size == "tiny"
    assert tiny.train.max_steps is not None


def test_overrides_parse_yaml_values_and_apply_in_order():
    cfg = load_config(
        "tiny",
        [
            "model.d_model=48",
            "model.n_heads=3",
            "train.max_steps=null",
            "data.categorical=[a, b]",
            "train.lr=5e-4",
        ],
    )
    assert cfg.model.resolved()[0] == 48
    assert cfg.train.max_steps is None
    assert cfg.data.categorical == ["a", "b"]
    assert cfg.train.lr == pytest.approx(5e-4)
    assert load_config("tiny", ["seed=1", "seed=2"]).seed == 2


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.d_modle=3", r"unknown config key 'model.d_modle'; did you mean 'model.d_model'"),
        ("modle.d_model=3", r"unknown config key 'modle'; did you mean 'model'"),
        ("train.lr=fast", r"train.lr: expected float, got str 'fast'"),
        ("train.batch_size=1.5", r"train.batch_size: expected int"),
        ("model.size=tinny", r"did you mean 'tiny'"),
        ("model.dropout=true", r"model.dropout: expected float, got bool"),
        ("data.categorical=item", r"data.categorical: expected a list of str"),
        ("train.lr", r"--set expects KEY=VALUE"),
        ("finetune.blend=best", r"finetune.blend: expected one of 'auto' or float, got str 'best'"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("tiny", [override])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.d_model=30", "model.n_heads=4"], r"d_model \(30\) must be divisible by model.n_heads \(4\)"),
        (["model.n_layers=0"], r"n_layers must be >= 1"),
        (["masking.mask_replace_prob=0.9", "masking.random_replace_prob=0.2"], r"must be <= 1"),
        (["masking.mask_prob=0"], r"mask_prob must be > 0"),
        (["detect.contamination=0.7"], r"contamination must be in"),
        (["detect.weights={nope: 1.0}"], r"not in detect.members"),
        (["model.predict_fields=[colour]"], r"predict_fields names 'colour'"),
        (["label_studio.url=localhost:8080"], r"must start with http"),
        (["finetune.blend=1.5"], r"finetune.blend must be 'auto' or a number in \[0, 1\], got 1.5"),
        (["finetune.blend_grid=[]"], r"finetune.blend_grid must be a non-empty list"),
        (["finetune.blend_grid=[0.5, 2]"], r"finetune.blend_grid must be a non-empty list of weights in"),
    ],
)
def test_validation_errors_are_actionable(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("tiny", overrides)


def test_finetune_blend_is_auto_by_default_or_a_fixed_weight():
    assert load_config("tiny").finetune.blend == "auto"
    assert load_config("tiny", ["finetune.blend=0.5"]).finetune.blend == 0.5
    assert load_config("tiny", ["finetune.blend=1"]).finetune.blend == 1.0


def test_yaml_base_inheritance_and_relative_paths(tmp_path: Path):
    (tmp_path / "parent.yaml").write_text("model:\n  size: tiny\ntrain:\n  lr: 0.01\n")
    (tmp_path / "child.yaml").write_text("base: parent.yaml\ntrain:\n  batch_size: 8\n")
    cfg = load_config(tmp_path / "child.yaml")
    assert (cfg.model.size, cfg.train.lr, cfg.train.batch_size) == ("tiny", 0.01, 8)


def test_bad_files(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(tmp_path / "broken.yaml")
    (tmp_path / "section.yaml").write_text("model: 3\n")
    with pytest.raises(ConfigError, match="model: expected a mapping"):
        load_config(tmp_path / "section.yaml")


def test_round_trip_through_yaml(tmp_path: Path):
    cfg = load_config("shop", ["model.d_model=96", "detect.weights={knn: 2.0}"])
    path = tmp_path / "saved.yaml"
    path.write_text(dump_config(cfg))
    again = load_config(path)
    assert config_to_dict(again) == config_to_dict(cfg)
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_all_keys_covers_every_section():
    keys = all_keys()
    for expected in ("data.entity_col", "model.d_model", "train.trim_fraction", "detect.k", "query.strategy"):
        assert expected in keys
