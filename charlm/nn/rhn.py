"""The Recurrent Highway Network core (Zilly, Srivastava, Koutník & Schmidhuber 2017).

Highway layers inside the recurrent transition. Per time step, ``depth`` micro-layers
l = 1..L update the state s (s_0 is the previous step's s_L); the input x enters the first only::

    h_l = tanh(W_H x [l = 1] + R_H,l s_{l-1} + b_H,l)
    t_l = sigmoid(W_T x [l = 1] + R_T,l s_{l-1} + b_T,l)
    s_l = h_l * t_l + s_{l-1} * (1 - t_l)        (coupled carry gate: c = 1 - t)

The transform-gate biases b_T,l start at ``gate_bias`` (default -2, as in the reference code), so
each micro-layer starts out mostly carrying its state. Dropout is variational, as in the paper: one
mask per sequence on the input, on the state (the same mask for every micro-layer and step) and on
the output.

For speed on a CPU the input part of every step of a chunk is one matrix product ``[B*T, D] x
[D, 2H]``; only the recurrent part runs step by step, one ``[B, H] x [H, 2H]`` product per
micro-layer. The state stays float32 under bf16 autocast (the products run in bf16).
"""

from __future__ import annotations

import torch
from torch import nn

from charlm.nn.core import RecurrentCore, State
from charlm.nn.dropout import LockedDropout, keep_mask


class RHNCore(RecurrentCore):
    """A recurrent highway network of recurrence depth ``depth``; state ``{"s"}`` ``[B, H]``."""

    state_batch_dims = {"s": 0}

    def __init__(self, input_size: int, hidden_size: int, depth: int, *, gate_bias: float = -2.0,
                 input_dropout: float = 0.0, state_dropout: float = 0.0, output_dropout: float = 0.0):
        super().__init__()
        if depth < 1:
            raise ValueError(f"RHN depth must be at least 1, got {depth}")
        self.input_size, self.output_size, self.depth = input_size, hidden_size, depth
        self.gate_bias = gate_bias
        self.input_weight = nn.Linear(input_size, 2 * hidden_size, bias=False)  # [W_H; W_T]
        self.recurrent = nn.ModuleList(nn.Linear(hidden_size, 2 * hidden_size) for _ in range(depth))  # [R_H,l; R_T,l], b_l
        self.input_dropout = LockedDropout(input_dropout)
        self.state_dropout = state_dropout
        self.output_dropout = LockedDropout(output_dropout)

    @classmethod
    def from_config(cls, config, input_size: int) -> "RHNCore":
        return cls(input_size, config.hidden_size, config.rhn_depth, gate_bias=config.rhn_gate_bias,
                   input_dropout=config.input_dropout, state_dropout=config.state_dropout,
                   output_dropout=config.dropout)

    def transform_gate_biases(self) -> list[torch.Tensor]:
        return [layer.bias[self.output_size:] for layer in self.recurrent]

    def initialise_after_uniform(self) -> None:
        with torch.no_grad():
            for bias in self.transform_gate_biases():
                bias.add_(self.gate_bias)

    def initial_state(self, batch_size: int) -> State:
        return {"s": self._zeros(batch_size, self.output_size)}

    def forward(self, x: torch.Tensor, state: State, gates: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, State]:
        """``x`` ``[B, T, D]`` -> ``[B, T, H]``. If ``gates`` is a list, the transform gates of every
        step are appended to it as ``[B, T, depth, H]``."""
        s = state["s"]
        projected = self.input_weight(self.input_dropout(x))  # [B, T, 2H]: the input part, all steps at once
        mask = None
        if self.training and self.state_dropout > 0.0:
            mask = keep_mask(s.shape, self.state_dropout, s)  # [B, H], the same at every step
        outputs, step_gates = [], []
        for t in range(x.size(1)):
            for l, layer in enumerate(self.recurrent):
                pre = layer(s if mask is None else s * mask)  # [B, 2H]
                if l == 0:
                    pre = pre + projected[:, t]
                h, g = pre.float().chunk(2, dim=-1)
                g = torch.sigmoid(g)
                s = s + g * (torch.tanh(h) - s)  # h * t + s * (1 - t)
                if gates is not None:
                    step_gates.append(g)
            outputs.append(s)
        if gates is not None:
            gates.append(torch.stack(step_gates, 1).view(x.size(0), x.size(1), self.depth, -1))
        return self.output_dropout(torch.stack(outputs, dim=1)), {"s": s}
