"""Averaged SGD: the running mean of the weights over the last stretch of training.

Averaging the iterates of SGD (Polyak & Juditsky 1992) smooths out the noise of the last updates;
AWD-LSTM (Merity, Keskar & Socher 2018) starts it when validation stops improving ("NT-ASGD",
non-monotonically triggered) and keeps the learning rate fixed from then on. With
``train.average=asgd`` a charlm run does the same: at the first epoch where the learning-rate rule
would decay (validation improved by no more than ``train.decay_threshold``) it starts averaging
instead and keeps the learning rate. From then on the weights after every update are added to a
running mean; validation, the learning-rate rule, ``best/`` and the records use the mean, and
training goes on from the un-averaged weights.

:class:`WeightAverage` holds the mean; the run saves it in every resumable state
(``average.safetensors``), so a resumed run averages exactly as an uninterrupted one.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

from charlm.errors import CharlmError


class WeightAverage:
    """The mean of a model's parameters over the updates added so far (``count`` of them)."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.count = 0
        self.mean: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def add(self) -> None:
        """Add the model's current weights (call after each optimizer update)."""
        self.count += 1
        for name, param in self.model.named_parameters():
            if self.count == 1:
                self.mean[name] = param.detach().clone()
            else:
                self.mean[name].lerp_(param.detach(), 1.0 / self.count)  # mean += (w - mean) / count

    @contextmanager
    def applied(self) -> Iterator[None]:
        """Within the block the model holds the averaged weights (unchanged while nothing was
        added); its own weights are put back afterwards, bit for bit."""
        if not self.count:
            yield
            return
        params = dict(self.model.named_parameters())
        own = {name: param.detach().clone() for name, param in params.items()}
        try:
            with torch.no_grad():
                for name, param in params.items():
                    param.copy_(self.mean[name])
            yield
        finally:
            with torch.no_grad():
                for name, param in params.items():
                    param.copy_(own[name])

    def load_state_dict(self, mean: dict[str, torch.Tensor], count: int) -> None:
        """Restore a mean of ``count`` (>= 1) updates; its names and shapes must be the model's."""
        params = dict(self.model.named_parameters())
        if {name: tuple(t.shape) for name, t in mean.items()} != {name: tuple(p.shape) for name, p in params.items()}:
            raise CharlmError(
                "the saved weight average does not match this model (names or shapes differ); resume "
                "with the run's own config"
            )
        self.count = count
        self.mean = {name: mean[name].to(params[name].device, params[name].dtype) for name in params}
