"""Configuration: the one source of every default (:mod:`charlm.config.schema`), loaded from YAML
with ``base:`` inheritance and ``key=value`` overrides (:mod:`charlm.config.load`; the flat keys
of charlm 0.1 upgraded by :mod:`charlm.config.legacy`), described in ``charlm train --help``
(:mod:`charlm.config.help_text`)."""

from charlm.config.help_text import describe_fields, field_docs
from charlm.config.load import (
    apply_overrides,
    config_from_dict,
    flat_items,
    load_config,
    model_config_from_json,
    resolve_config_path,
    shipped_configs,
)
from charlm.config.schema import CONFIG_DIR, MIXED_PRECISION, ModelConfig, PartOptions, RunConfig, TrainConfig

__all__ = [
    "CONFIG_DIR",
    "MIXED_PRECISION",
    "ModelConfig",
    "PartOptions",
    "RunConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "describe_fields",
    "field_docs",
    "flat_items",
    "load_config",
    "model_config_from_json",
    "resolve_config_path",
    "shipped_configs",
]
