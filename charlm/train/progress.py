"""Where a run stands (saved in every resumable state) and the record of one epoch."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass
class Progress:
    """Where a run stands; saved in every resumable state (``progress.json``) and restored on resume."""

    lr: float
    """The learning rate now."""
    epoch: int = 0
    """Completed epochs."""
    chunk: int = 0
    """Chunks done in the current epoch."""
    global_step: int = 0
    """Optimizer updates so far."""
    valid_history: list[float] = field(default_factory=list)
    """Validation perplexity after each completed epoch."""
    best_valid: float = math.inf
    epoch_nll: list[float] = field(default_factory=list)
    """Each process's summed training NLL in the current epoch (up to the last fold)."""
    epoch_train_seconds: float = 0.0
    """Training time of the current epoch (up to the last fold)."""
    average_since: int | None = None
    """train.average=asgd: the update after which the weights are averaged (None: not yet)."""

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Progress":
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})


@dataclass
class EpochRecord:
    """One line of ``metrics.jsonl``."""

    epoch: float
    step: int
    lr: float
    train_ppl: float
    valid_ppl: float
    tokens_per_sec: float
    seconds: float
    averaged_updates: int | None = None
    """train.average=asgd: how many updates the validated weights average (the key is left out before)."""
