"""The help text of every config key (``charlm train --help``), from the field docstrings."""

from __future__ import annotations

import ast
import inspect
import textwrap
from dataclasses import asdict

from charlm.config.schema import ModelConfig, TrainConfig


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of dataclass ``cls`` (read from its source)."""
    source = textwrap.dedent(inspect.getsource(cls))
    body = ast.parse(source).body[0].body
    docs = {}
    for node, following in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def describe_fields() -> str:
    """All config keys with their defaults and docstrings, for ``--help``; the options of each
    registered core and output layer under the part's name."""
    from charlm.nn import CORES, OUTPUTS

    lines = []
    for section, cls in (("model", ModelConfig), ("train", TrainConfig)):
        defaults = asdict(cls())
        for name, doc in field_docs(cls).items():
            shown = defaults[name]["name"] if name in ("core", "output") else defaults[name]
            lines.append(f"  {section}.{name} (default {shown!r}): {doc}")
            if section == "model" and name in ("core", "output"):
                lines += _part_options(name, CORES if name == "core" else OUTPUTS)
    return "\n".join(lines)


def _part_options(kind: str, table: dict[str, type]) -> list[str]:
    lines = []
    for part_name, part in table.items():
        defaults = asdict(part.Options())
        try:
            docs = field_docs(part.Options)
        except (OSError, TypeError):  # an options class made on the fly has no source
            docs = {}
        for option, doc in docs.items():
            if option != "name":
                lines.append(f"    model.{kind}.{option} ({kind} {part_name}, default {defaults[option]!r}): {doc}")
    return lines
