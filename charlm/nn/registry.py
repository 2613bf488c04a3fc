"""The names ``model.core`` and ``model.output`` accept, filled by the parts themselves.

A core or an output layer registers its class, under its config name and with the dataclass of its
own options, where it is defined::

    @dataclass
    class RHNOptions(PartOptions):
        name: str = "rhn"
        depth: int = 2
        \"\"\"Highway micro-layers per time step.\"\"\"

    @register_core("rhn", RHNOptions)
    class RHNCore(RecurrentCore): ...

so a new part is one file (plus its import in ``charlm/nn/__init__.py``, or in the user's own
code before the config is built). A config then reads ``core: {name: rhn, depth: 4}`` into an
``RHNOptions`` (unknown options are errors), the model builds the part with
``from_config(config, ...)``, which reads its options from ``config.core`` (or ``config.output``),
and the training summary, ``--help`` and the benchmark ask the class itself for its description,
its options and its cost (``describe``, ``flops_per_token``).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, TypeVar

from charlm.config.schema import PartOptions

CORES: dict[str, type] = {}
"""``model.core`` name -> core class (a :class:`~charlm.nn.core.RecurrentCore`)."""
OUTPUTS: dict[str, type] = {}
"""``model.output`` name -> output class (a :class:`~charlm.nn.output.OutputLayer`)."""

T = TypeVar("T", bound=type)


def _register(table: dict[str, type], kind: str, name: str, options: type | None) -> Callable[[T], T]:
    if options is None:  # a part without options of its own: just its name
        options = dataclasses.make_dataclass(
            f"{kind.title()}Options_{name}", [("name", str, dataclasses.field(default=name))], bases=(PartOptions,)
        )
    if not (dataclasses.is_dataclass(options) and issubclass(options, PartOptions)) or options().name != name:
        raise ValueError(f"the options of {kind} {name!r} must be a PartOptions dataclass whose name defaults to it")

    def add(cls: T) -> T:
        if name in table and table[name] is not cls:
            raise ValueError(f"{kind} name {name!r} is already taken by {table[name].__qualname__}")
        cls.Options = options
        table[name] = cls
        return cls

    return add


def register_core(name: str, options: type | None = None) -> Callable[[T], T]:
    """Class decorator: make a recurrent core available as ``model.core: {name: NAME, ...}``."""
    return _register(CORES, "core", name, options)


def register_output(name: str, options: type | None = None) -> Callable[[T], T]:
    """Class decorator: make an output layer available as ``model.output: {name: NAME, ...}``."""
    return _register(OUTPUTS, "output", name, options)
