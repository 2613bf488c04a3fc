"""The paper's training recipe in small pieces: the optimizer, the learning-rate rule, the loss, the tracker."""

from __future__ import annotations

import torch

from charlm.config import TrainConfig
from charlm.errors import CharlmError

TRACKING_PROJECT = "charlm"  # the trackers' project name (TensorBoard: OUTPUT_DIR/charlm/)


def tracker(report_to: str) -> str | None:
    """``train.report_to`` as accelerate's ``log_with``; a tracker that is not installed is a
    one-line error (accelerate would skip it silently)."""
    if report_to == "none":
        return None
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers

    if report_to != "all" and report_to not in LOGGER_TYPE_TO_CLASS:
        raise CharlmError(
            f"train.report_to={report_to!r} is not a tracker accelerate knows; use none, all or one "
            f"of: {', '.join(sorted(LOGGER_TYPE_TO_CLASS))}"
        )
    available = {str(t) for t in get_available_trackers()}
    if report_to != "all" and report_to not in available:
        extra = " (pip install charlm[tensorboard])" if report_to == "tensorboard" else f" (pip install {report_to})"
        raise CharlmError(f"train.report_to={report_to} needs the {report_to} package, which is not installed{extra}")
    return report_to


def build_optimizer(model: torch.nn.Module, tc: TrainConfig) -> torch.optim.Optimizer:
    if tc.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay)
    if tc.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)


def should_decay(history: list[float], tc: TrainConfig) -> bool:
    """The reference rule: after epoch >= decay_start_epoch, decay unless validation perplexity
    improved by more than ``decay_threshold`` over the previous (or best earlier) epoch."""
    if len(history) < max(tc.decay_start_epoch, 2):
        return False
    reference = history[-2] if tc.decay_compare == "previous" else min(history[:-1])
    return reference - history[-1] <= tc.decay_threshold


def sequence_loss(nll: torch.Tensor) -> torch.Tensor:
    """Per-token losses ``[B, T]`` -> summed over the time steps, averaged over the batch rows:
    the loss whose gradient the paper clips at norm 5 (the per-token mean times seq_len)."""
    return nll.sum(dim=1).mean()
