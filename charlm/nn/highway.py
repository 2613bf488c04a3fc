"""Highway layers (Srivastava, Greff & Schmidhuber 2015) and their ablations.

``kind='highway'``:   z = t * g(W_H y + b_H) + (1 - t) * y,   t = sigmoid(W_T y + b_T)
``kind='mlp'``:       z = g(W_H y + b_H)
``kind='residual'``:  z = g(W_H y + b_H) + y                  (both gates fixed open)

The carry gate is coupled, 1 - t. One ``Linear(d, 2d)`` per highway layer computes the transform
and the gate together; its second half is the gate. The negative gate bias of the paper (the
layers start out carrying their input) is added by :meth:`Highway.shift_gate_biases`, which the
model calls after its uniform initialisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATION_FUNCTIONS = {
    "relu": F.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "identity": lambda x: x,
}


class Highway(nn.Module):
    """A stack of ``num_layers`` layers of one kind (see the module doc); 0 layers is the identity."""

    def __init__(
        self, size: int, num_layers: int, kind: str = "highway", activation: str = "relu", gate_bias: float = -2.0
    ):
        super().__init__()
        self.kind = kind
        self.size = size
        self.gate_bias = gate_bias
        out = 2 * size if kind == "highway" else size
        self.layers = nn.ModuleList(nn.Linear(size, out) for _ in range(num_layers))
        self.activation = ACTIVATION_FUNCTIONS[activation]

    def forward(self, y: torch.Tensor, gates: list[torch.Tensor] | None = None) -> torch.Tensor:
        # y: [..., size]. If ``gates`` is a list, each layer's transform gate t is appended to it.
        for layer in self.layers:
            projected = layer(y)
            if self.kind == "highway":
                transform, gate = projected.split(self.size, dim=-1)
                t = torch.sigmoid(gate)
                if gates is not None:
                    gates.append(t)
                y = t * self.activation(transform) + (1.0 - t) * y
            elif self.kind == "mlp":
                y = self.activation(projected)
            else:  # residual
                y = self.activation(projected) + y
        return y

    def gate_biases(self) -> list[torch.Tensor]:
        """The transform-gate half of each layer's bias (empty unless kind is 'highway')."""
        if self.kind != "highway":
            return []
        return [layer.bias[self.size :] for layer in self.layers]

    @torch.no_grad()
    def shift_gate_biases(self) -> None:
        """Add ``gate_bias`` to every transform-gate bias (after the weights were drawn)."""
        for bias in self.gate_biases():
            bias.add_(self.gate_bias)
