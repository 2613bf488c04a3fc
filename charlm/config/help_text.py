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
    """All config keys with their defaults and docstrings, for ``--help``."""
    lines = []
    for section, cls in (("model", ModelConfig), ("train", TrainConfig)):
        defaults = asdict(cls())
        for name, doc in field_docs(cls).items():
            lines.append(f"  {section}.{name} (default {defaults[name]!r}): {doc}")
    return "\n".join(lines)
