"""Building a :class:`~charlm.config.RunConfig` from dicts, YAML files (shipped or not) and ``key=value`` overrides."""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from charlm.config.legacy import FLAT_KEYS, part_values, upgrade_model_values
from charlm.config.schema import CONFIG_DIR, ModelConfig, PartOptions, RunConfig, TrainConfig, part_options
from charlm.errors import CharlmError, error_reason


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    """Check ``value`` against a field's type annotation (int, float, bool, str, list[int])."""
    origin = typing.get_origin(annotation)
    if origin is list:
        (item_type,) = typing.get_args(annotation)
        if not isinstance(value, (list, tuple)):
            raise CharlmError(f"{name} must be a list, e.g. [1, 2, 3]; got {value!r}")
        return [_coerce(f"{name}[{i}]", v, item_type) for i, v in enumerate(value)]
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as text
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise CharlmError(f"{name} must be a finite number; got {value!r}")
            return float(value)
    elif annotation is str:
        if value is None:
            return ""
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            raise CharlmError(
                f"{name} must be text; YAML reads an unquoted yes/no/on/off as a boolean, "
                f"so quote it: '{'yes' if value else 'no'}'"
            )
    else:  # pragma: no cover - a field type this function was not taught
        raise TypeError(f"unsupported config field type {annotation} for {name}")
    raise CharlmError(f"{name} must be of type {annotation.__name__}; got {value!r}")


def _build(cls: type, values: dict[str, Any], prefix: str) -> Any:
    """Instantiate dataclass ``cls`` from ``values``, rejecting unknown keys by name."""
    if not isinstance(values, dict):
        raise CharlmError(f"{prefix or 'the config'} must be a mapping of keys to values")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    kwargs = {}
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
            part = f" of {prefix[6:-1]} {values.get('name')!r}" if issubclass(cls, PartOptions) else ""
            raise CharlmError(
                f"unknown config key {dotted!r}{part}{hint}; valid keys: {', '.join(prefix + k for k in known)}"
            )
        if hints[key] is PartOptions:  # model.core, model.output: the named part's own options
            value = part_values(value, key)
            options_class = type(part_options(key, value["name"]))
            kwargs[key] = _build(options_class, value, f"{dotted}.")
        elif dataclasses.is_dataclass(hints[key]):
            kwargs[key] = _build(hints[key], value, f"{dotted}.")
        else:
            kwargs[key] = _coerce(dotted, value, hints[key])
    return cls(**kwargs)


def config_from_dict(values: dict[str, Any]) -> RunConfig:
    values = dict(values or {})
    if "model" in values:
        values["model"] = upgrade_model_values(values["model"])
    return _build(RunConfig, values, "")


def flat_items(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config mapping as ``{"model.core.depth": 4, ...}`` (trackers, comparisons)."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(flat_items(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _parse_value(text: str) -> Any:
    """A command-line value: YAML scalars and lists ('2', '0.5', 'true', '[1, 2]'), else a string."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides to a nested dict (in place) and return it."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise CharlmError(f"override {item!r} is not of the form section.key=value (e.g. train.lr=0.5)")
        parts = key.strip().split(".")
        if len(parts) == 1:  # a bare key such as max_epochs=2: find its section
            sections = [
                s
                for s, cls in (("model", ModelConfig), ("train", TrainConfig))
                if parts[0] in {f.name for f in fields(cls)}
            ]
            parts = [sections[0] if len(sections) == 1 else "?", parts[0]]
        if len(parts) == 2 and parts[0] == "model" and parts[1] in FLAT_KEYS:  # charlm 0.1: model.rhn_depth
            kind, _, option = FLAT_KEYS[parts[1]]
            parts = ["model", kind, option]
        if len(parts) == 3 and parts[:2] in (["model", "core"], ["model", "output"]):
            part = values.setdefault("model", {})
            part[parts[1]] = part_values(part.get(parts[1]), parts[1])
            part[parts[1]][parts[2]] = _parse_value(raw)  # model.core.depth=4
            continue
        if len(parts) != 2:
            raise CharlmError(
                f"override key {key!r} must be section.key or model.PART.key, e.g. model.dropout, "
                "train.lr or model.core.depth"
            )
        section, name = parts
        if section not in ("model", "train"):
            raise CharlmError(f"unknown config key {key!r} in {item!r}; use model.KEY or train.KEY (see --help)")
        cls = ModelConfig if section == "model" else TrainConfig
        is_text = typing.get_type_hints(cls).get(name) is str
        # Text fields keep the raw text: YAML would read 'no' (a mixed_precision value) as False.
        values.setdefault(section, {})[name] = raw if is_text else _parse_value(raw)
    return values


def shipped_configs() -> list[str]:
    """Names of the configs that ship in the package (``charlm/configs/NAME.yaml``)."""
    return sorted(path.stem for path in CONFIG_DIR.glob("*.yaml"))


def resolve_config_path(ref: str | Path) -> Path:
    """The YAML file ``--config`` names: a file that exists, else a shipped config.

    A shipped config is named bare (``ptb-char-small``, or ``ptb-char-small.yaml``) or by its
    former place in the repository (``configs/ptb-char-small.yaml``, where the shipped configs lived
    before they moved into the package), so commands written for a clone keep working.
    Anything else is a one-line error that lists the shipped names.
    """
    path = Path(ref)
    if path.is_file():
        return path
    bare = path.parent == Path(".")
    stem = path.name.removesuffix(".yaml")
    shipped = CONFIG_DIR / f"{stem}.yaml"
    if (bare or path.parent.name == "configs") and shipped.is_file():
        return shipped
    names = ", ".join(shipped_configs())
    if bare and path.suffix not in (".yaml", ".yml"):
        raise CharlmError(f"unknown config {str(ref)!r}: pass a YAML file or one of the shipped configs: {names}")
    raise CharlmError(
        f"config file {path} not found; pass an existing YAML file or one of the shipped configs: {names}"
    )


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Dataclass defaults, then the YAML file ``path`` names (a file or a shipped config's name,
    see :func:`resolve_config_path`) on top of the files it names as ``base:``, then ``overrides``."""
    values = read_yaml_config(resolve_config_path(path)) if path is not None else {}
    apply_overrides(values, overrides or [])
    return config_from_dict(values)


def read_yaml_config(path: Path, _children: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A YAML config's values, merged over those of its ``base:`` (a file beside it, or a shipped
    config's name), whose own base is read the same way."""
    if path.resolve() in _children:
        chain = " -> ".join(str(p) for p in (*_children, path.resolve()))
        raise CharlmError(f"config files name each other as base: {chain}; remove one of the base: lines")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise CharlmError(f"config file {path} is not valid YAML: {error_reason(err)}") from None
    except OSError as err:
        raise CharlmError(f"config file {path} cannot be read ({err.strerror})") from None
    if not isinstance(values, dict):
        raise CharlmError(f"config file {path} must be a mapping with 'model' and/or 'train' sections")
    if isinstance(values.get("model"), dict):
        values["model"] = upgrade_model_values(values["model"])
    base = values.pop("base", None)
    if base is None:
        return values
    if not isinstance(base, str) or not base:
        raise CharlmError(f"base: in {path} must name a config file or a shipped config, got {base!r}")
    beside = path.parent / base
    base_path = beside if beside.is_file() else resolve_config_path(base)
    return merge_configs(read_yaml_config(base_path, (*_children, path.resolve())), values)


def merge_configs(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """``child`` over ``base``, section by section and key by key; a part (model.core,
    model.output) of the same name merges its options, one of another name replaces it."""
    merged = dict(base)
    for section, values in child.items():
        if not (isinstance(values, dict) and isinstance(base.get(section), dict)):
            merged[section] = values
            continue
        merged[section] = dict(base[section])
        for key, value in values.items():
            if section == "model" and key in ("core", "output") and key in base[section]:
                old = part_values(base[section][key], key)
                unnamed = isinstance(value, dict) and "name" not in value  # options of the base's part
                new = {"name": old["name"], **value} if unnamed else part_values(value, key)
                value = {**old, **new} if old["name"] == new["name"] else new
            merged[section][key] = value
    return merged


def model_config_from_json(path: str | Path) -> ModelConfig:
    """Read the ``config.json`` of an exported model (the ``model`` section is used)."""
    path = Path(path)
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CharlmError(
            f"{path} is missing: is {path.parent} an exported model directory (best/ of a run)?"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CharlmError(f"{path} is not valid JSON ({err}); re-export the model") from None
    except OSError as err:
        raise CharlmError(f"{path} cannot be read ({err.strerror}); re-export the model") from None
    if not isinstance(values, dict):
        raise CharlmError(f"{path} is not a model config (a JSON object); re-export the model")
    return _build(ModelConfig, upgrade_model_values(values.get("model", values)), "model.")
