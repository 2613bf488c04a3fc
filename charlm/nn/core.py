"""The recurrent core's protocol: what the rest of charlm may ask of an LSTM, an RHN, or any core.

A core reads the per-word vectors ``[B, T, D]`` of a chunk of text and returns one output vector
per position ``[B, T, output_size]`` (with its output dropout applied in training) and the state
to continue from. The state is a dict of named tensors whose batch dimension is named by
``state_batch_dims`` (so training can carry it between chunks, checkpoints can save it as
safetensors, and generation can copy it across samples), nothing more::

    state = core.initial_state(batch_size)      # zeros
    y, state = core(x, state)                   # x [B, T, D] -> y [B, T, H]
    state = detach_state(state)                 # truncated BPTT: keep values, cut gradients

``stages()`` splits the core into consecutive pieces (LSTM layers, say) that exact scoring may run
side by side on different threads for consecutive chunks (see :mod:`charlm.scoring`); a core that
cannot be split returns ``[self]``.
"""

from __future__ import annotations

import torch
from torch import nn

State = dict[str, torch.Tensor]


class RecurrentCore(nn.Module):
    """Base class of the cores; subclasses set ``input_size`` and ``output_size`` and implement
    ``initial_state``, ``forward`` and ``state_batch_dims``."""

    input_size: int
    output_size: int
    state_batch_dims: dict[str, int]
    """For each named state tensor, its batch dimension."""

    def initial_state(self, batch_size: int) -> State:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config, input_size: int) -> "RecurrentCore":
        """The core a :class:`~charlm.config.ModelConfig` asks for (its options: ``config.core``),
        reading vectors of ``input_size``."""
        raise NotImplementedError

    @classmethod
    def describe(cls, config) -> str:
        """A few words for the training summary, e.g. ``LSTM 2x300``."""
        return f"{config.core.name} {config.hidden_size}"

    @classmethod
    def flops_per_token(cls, config, input_size: int) -> float:
        """Forward multiply-adds x 2 per token (the benchmark's rate of the matrix products)."""
        raise NotImplementedError

    def stages(self) -> list["RecurrentCore"]:
        """Consecutive pieces whose composition is this core (eval mode only)."""
        return [self]

    def initialise_after_uniform(self) -> None:
        """Special initialisation after the model drew every weight uniformly (gate biases...)."""

    def _zeros(self, *shape: int) -> torch.Tensor:
        weight = next(self.parameters())
        return torch.zeros(shape, dtype=torch.float32, device=weight.device)


def detach_state(state: State) -> State:
    """Cut the graph between chunks of truncated BPTT: the values carry over, gradients do not."""
    return {name: tensor.detach() for name, tensor in state.items()}


def expand_state(core: RecurrentCore, state: State, batch_size: int) -> State:
    """A batch-1 state copied to ``batch_size`` rows (for sampling several continuations)."""
    expanded = {}
    for name, tensor in state.items():
        sizes = [-1] * tensor.dim()
        sizes[core.state_batch_dims[name]] = batch_size
        expanded[name] = tensor.expand(*sizes).contiguous()
    return expanded
