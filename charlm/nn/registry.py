"""The names ``model.core`` and ``model.output`` accept, filled by the parts themselves.

A core or an output layer registers its class under its config name where it is defined::

    @register_core("rhn")
    class RHNCore(RecurrentCore): ...

so a new part is one file (plus its import in ``charlm/nn/__init__.py``, or in the user's own
code before the config is built): the config checks ``model.core`` against :data:`CORES` when it
is built, the model builds the part with ``from_config``, and the training summary and the
benchmark ask the class itself for its one-line description and its cost (``describe``,
``flops_per_token``).
"""

from __future__ import annotations

from typing import Callable, TypeVar

CORES: dict[str, type] = {}
"""``model.core`` name -> core class (a :class:`~charlm.nn.core.RecurrentCore`)."""
OUTPUTS: dict[str, type] = {}
"""``model.output`` name -> output class (a :class:`~charlm.nn.output.OutputLayer`)."""

T = TypeVar("T", bound=type)


def _register(table: dict[str, type], kind: str, name: str) -> Callable[[T], T]:
    def add(cls: T) -> T:
        if name in table and table[name] is not cls:
            raise ValueError(f"{kind} name {name!r} is already taken by {table[name].__qualname__}")
        table[name] = cls
        return cls

    return add


def register_core(name: str) -> Callable[[T], T]:
    """Class decorator: make a recurrent core available as ``model.core: NAME``."""
    return _register(CORES, "core", name)


def register_output(name: str) -> Callable[[T], T]:
    """Class decorator: make an output layer available as ``model.output: NAME``."""
    return _register(OUTPUTS, "output", name)
