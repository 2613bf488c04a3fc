"""Configs written before each part owned its options: the flat keys of charlm 0.1.

charlm 0.1 wrote every part's options at the top of ``model`` with a prefix (``core: rhn``,
``rhn_depth: 4``, ``adaptive_cutoffs: [4000]``...), and its exported models' ``config.json`` holds
all of them, for every part, used or not. :func:`upgrade_model_values` moves each into its part
(``core: {name: rhn, depth: 4}``), so old YAML files, old exports and old runs (``--resume``) keep
loading. An old key of a part the config does not use is dropped when it holds that option's
default (an old export lists them all) and is an error otherwise: it never did anything.
"""

from __future__ import annotations

from typing import Any

from charlm.errors import CharlmError

FLAT_KEYS = {
    "lstm_layers": ("core", "lstm", "layers"),
    "lstm_recurrent_bias": ("core", "lstm", "recurrent_bias"),
    "locked_dropout": ("core", "lstm", "locked_dropout"),
    "weight_drop": ("core", "lstm", "weight_drop"),
    "rhn_depth": ("core", "rhn", "depth"),
    "rhn_gate_bias": ("core", "rhn", "gate_bias"),
    "state_dropout": ("core", "rhn", "state_dropout"),
    "adaptive_cutoffs": ("output", "adaptive", "cutoffs"),
    "adaptive_div_value": ("output", "adaptive", "div_value"),
    "output_share_encoder": ("output", "char", "share_encoder"),
    "output_num_filters": ("output", "char", "num_filters"),
    "output_correction_dim": ("output", "char", "correction_dim"),
    "output_word_bias": ("output", "char", "word_bias"),
}
"""charlm 0.1's key -> (part kind, part name, option)."""

DEFAULT_PART = {"core": "lstm", "output": "full"}


def part_values(value: Any, kind: str) -> dict[str, Any]:
    """``model.core`` / ``model.output`` as written (a name, a mapping, or absent) as a mapping with a name."""
    if value is None:
        return {"name": DEFAULT_PART[kind]}
    if isinstance(value, str):
        return {"name": value}
    if not isinstance(value, dict):
        example = f"{{name: {DEFAULT_PART[kind]}}}"
        raise CharlmError(f"model.{kind} must be a name or a mapping such as {example}; got {value!r}")
    return {"name": DEFAULT_PART[kind], **value}


def upgrade_model_values(values: dict[str, Any]) -> dict[str, Any]:
    """A copy of a ``model`` mapping with charlm 0.1's flat part keys moved into their parts."""
    if not isinstance(values, dict) or not FLAT_KEYS.keys() & values.keys():
        return values
    from charlm.config.schema import part_options  # the parts' own defaults

    values = dict(values)
    parts = {kind: part_values(values.get(kind), kind) for kind in DEFAULT_PART}
    for key in [k for k in values if k in FLAT_KEYS]:
        kind, name, option = FLAT_KEYS[key]
        value = values.pop(key)
        if parts[kind]["name"] == name:
            if parts[kind].setdefault(option, value) != value:
                raise CharlmError(
                    f"model.{key} ({value!r}) and model.{kind}.{option} ({parts[kind][option]!r}) are one "
                    f"option given twice: keep model.{kind}.{option}"
                )
        elif value != getattr(part_options(kind, name), option):
            raise CharlmError(
                f"model.{key} is an option of {kind} {name}, but model.{kind} is "
                f"{parts[kind]['name']}: remove it (options now sit in their part: model.{kind}.{option})"
            )
    for kind, part in parts.items():
        if kind in values or len(part) > 1:
            values[kind] = part
    return values
