"""Strict loading of :class:`~anomaly_ssl.config.Config` from YAML and overrides.

A YAML file may name a ``base:`` config (a path relative to it, or the name of a
shipped config such as ``shop``) whose values it overrides.  ``key=value``
overrides use dotted keys (``model.d_model=64``); values are parsed as YAML, so
``train.max_steps=null`` and ``data.categorical=[item_id,device]`` work.  Every
key and value is checked against the dataclass types; mistakes raise
:class:`ConfigError` naming the key and the closest valid key.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from .config import Config
from .errors import ConfigError

_FLOAT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")

#: folder of the configs shipped with the project (``configs/`` at the repository root)
SHIPPED_CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def shipped_config_path(name: str) -> Path | None:
    """Return the path of a shipped config called ``name`` (with or without ``.yaml``)."""
    stem = name[:-5] if name.endswith(".yaml") else name
    path = SHIPPED_CONFIG_DIR / f"{stem}.yaml"
    return path if path.is_file() else None


def resolve_config_path(ref: str | Path, relative_to: Path | None = None) -> Path:
    """Find a config file: an existing path, relative to another config, or a shipped name."""
    candidates = [Path(ref)]
    if relative_to is not None:
        candidates.insert(0, relative_to / ref)
    for cand in candidates:
        if cand.is_file():
            return cand
    shipped = shipped_config_path(str(ref))
    if shipped is not None:
        return shipped
    names = sorted(p.stem for p in SHIPPED_CONFIG_DIR.glob("*.yaml")) if SHIPPED_CONFIG_DIR.is_dir() else []
    raise ConfigError(
        f"config file {str(ref)!r} not found; give a path to a YAML file or one of the shipped "
        f"configs: {', '.join(names) or '(none found)'}"
    )


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping, following ``base:`` references."""
    try:
        text = path.read_text(encoding="utf-8")
        raw = yaml.safe_load(text)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config file must hold a mapping of sections, got {type(raw).__name__}")
    base_ref = raw.pop("base", None)
    if base_ref is None:
        return raw
    base_path = resolve_config_path(str(base_ref), relative_to=path.parent)
    if base_path.resolve() == path.resolve():
        raise ConfigError(f"{path}: 'base' refers to the file itself")
    return deep_merge(read_yaml_mapping(base_path), raw)


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``base`` updated with ``over``; nested mappings merge, everything else replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``'a.b=value'`` into ``(['a', 'b'], parsed_value)``; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set expects KEY=VALUE (e.g. model.d_model=64), got {text!r}")
    key, _, value = text.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text!r}: empty key; use dotted keys like train.lr=0.001")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return key.split("."), parsed


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key=value`` strings to a nested mapping (returns a new mapping)."""
    out = deep_merge({}, raw)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[path[-1]] = value
    return out


def load_config(
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    base: Mapping[str, Any] | None = None,
) -> Config:
    """Build a validated :class:`Config`.

    Parameters
    ----------
    path : str or Path, optional
        A YAML file, or the name of a shipped config (``tiny``, ``shop``, ``hdfs`` ...).
    overrides : sequence of str
        ``key=value`` strings applied after the file, in order.
    base : mapping, optional
        Values applied before the file (e.g. a run directory's saved config).

    Returns
    -------
    Config
        The merged, type-checked and validated configuration.
    """
    raw: dict[str, Any] = deep_merge({}, base or {})
    if path is not None:
        raw = deep_merge(raw, read_yaml_mapping(resolve_config_path(path)))
    raw = apply_overrides(raw, overrides)
    cfg = config_from_dict(raw)
    cfg.validate()
    return cfg


def config_from_dict(raw: Mapping[str, Any]) -> Config:
    """Convert a nested mapping into a :class:`Config`, checking every key and type."""
    return _build_dataclass(Config, raw, prefix="")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Return the config as plain nested dicts/lists (YAML/JSON safe)."""
    return dataclasses.asdict(cfg)


def dump_config(cfg: Config) -> str:
    """Return the config as YAML text."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def all_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every dotted key of a config dataclass (for suggestions and docs)."""
    keys: list[str] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            keys.extend(all_keys(tp, key + "."))
        else:
            keys.append(key)
    return keys


def _suggest(key: str) -> str:
    valid = all_keys() + [f.name for f in dataclasses.fields(Config)]
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    if not close:
        tail = key.rsplit(".", 1)[-1]
        close = [k for k in valid if k.rsplit(".", 1)[-1] == tail][:1]
    return f"; did you mean {close[0]!r}?" if close else ""


def _build_dataclass(cls: type, raw: Any, prefix: str) -> Any:
    where = prefix.rstrip(".") or "config"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping of keys, got {type(raw).__name__} {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"unknown config key {dotted!r}{_suggest(dotted)}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build_dataclass(tp, value, dotted + ".")
        else:
            kwargs[key] = _coerce(value, tp, dotted)
    return cls(**kwargs)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return f"a mapping of str to {_type_name(typing.get_args(tp)[1])}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against type ``tp``; return it (ints widen to float)."""
    origin = typing.get_origin(tp)
    bad = ConfigError(f"{key}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise bad
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        close = difflib.get_close_matches(str(value), [str(a) for a in typing.get_args(tp)], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}{hint}")
    if origin is list:
        if not isinstance(value, list):
            raise bad
        (arg,) = typing.get_args(tp)
        return [_coerce(v, arg, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        _, varg = typing.get_args(tp)
        return {str(k): _coerce(v, varg, f"{key}.{k}") for k, v in value.items()}
    if tp is type(None):
        if value is None:
            return None
        raise bad
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _FLOAT_RE.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads "1e-3" as a string
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad
    raise bad
