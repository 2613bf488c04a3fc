"""The output layer's protocol, and the paper's full softmax.

An output layer turns the core's output vectors ``[N, H]`` into a distribution over the
vocabulary, through two methods that the rest of charlm uses and nothing else:

* ``nll(hidden, targets)`` -> ``[N]`` float32: ``-log p(target)`` (training and exact scoring);
* ``log_probs(hidden)`` -> ``[N, V]`` float32: every word's log-probability (generation, analyses).

An output layer whose per-word parameters are computed (the spelling-based one) computes them once
per forward pass in training; ``with output.frozen():`` (eval only, no gradients) computes them
once for everything inside, as scoring and generation do.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from charlm.nn.fused_softmax import linear_cross_entropy
from charlm.nn.registry import register_output


class OutputLayer(nn.Module):
    """Base class of the output layers; subclasses implement ``nll`` and ``log_probs``."""

    input_size: int
    vocab_size: int

    def nll(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def log_probs(self, hidden: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config, model) -> "OutputLayer":
        """The output layer a :class:`~charlm.config.ModelConfig` asks for (its options:
        ``config.output``), on top of ``model.core``."""
        raise NotImplementedError

    @classmethod
    def flops_per_token(cls, config, input_size: int) -> float:
        """Forward multiply-adds x 2 per token: every word's logit (subclasses that skip some say so)."""
        return 2 * input_size * config.vocab_size

    def frozen(self) -> contextlib.AbstractContextManager:
        """Within it, per-word parameters computed from other weights are computed once."""
        return contextlib.nullcontext()

    def initialise_after_uniform(self) -> None:
        """Special initialisation after the model drew every weight uniformly."""


@register_output("full")
class FullSoftmax(OutputLayer):
    """``softmax(W h + b)`` over the whole vocabulary (the paper), through the fused layer of
    :mod:`charlm.nn.fused_softmax` for the loss: the ``[N, V]`` logits are never kept."""

    def __init__(self, hidden_size: int, vocab_size: int):
        super().__init__()
        self.input_size, self.vocab_size = hidden_size, vocab_size
        self.decoder = nn.Linear(hidden_size, vocab_size)

    @classmethod
    def from_config(cls, config, model) -> "FullSoftmax":
        return cls(model.core.output_size, config.vocab_size)

    def nll(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return linear_cross_entropy(hidden, self.decoder.weight, self.decoder.bias, targets)

    def log_probs(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.decoder(hidden).float(), dim=-1)
