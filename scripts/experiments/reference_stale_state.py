#!/usr/bin/env python
"""Train with the reference code's uncloned carried state, to measure what it does.

The reference Torch code (yoonkim/lstm-char-cnn, main.lua) carries the LSTM state from one
batch to the next with ``init_state_global = rnn_state[#rnn_state]``: no copy. Those tensors
are the output buffers of the last time-step clone, so the next batch's forward pass
overwrites them with its own final state before the backward pass runs. The forward values
are right (step 1 reads the state before step T writes it), but the backward pass of step 1
reads its inputs ``prev_h`` and ``prev_c`` again and finds the *current* batch's final state:

* the recurrent weights get ``delta_1 (x) h_T`` instead of ``delta_1 (x) h_0``;
* the forget gate gets ``dL/dc_1 * c_T`` instead of ``dL/dc_1 * c_0`` (and so does
  everything below it at step 1: the input weights, the biases, the layer below, the
  highway layers and the char-CNN through ``x_1``).

This script reproduces exactly that, layer by layer, and otherwise runs ``charlm train``
unchanged: step 1 of every training chunk is computed by hand with two autograd functions
whose backward reads the final state, steps 2..T by the same ``nn.LSTM``. Evaluation
(validation, test) never takes gradients and uses the normal path. The checkpoint it writes
is an ordinary charlm checkpoint.

    python scripts/experiments/reference_stale_state.py --config ptb-char-small \
        --data-dir DATA --output-dir OUT [key=value ...]

It is an experiment, not an option of the library; its runs are in docs/reproduction.md.
"""

import sys

import torch
import torch.nn.functional as F
from torch import nn

from charlm.cli import main


class FinalState:
    """What the reference's carried-state buffers hold when backward runs: this chunk's end."""

    def __init__(self):
        self.value: torch.Tensor | None = None


class StaleLinear(torch.autograd.Function):
    """``prev_h @ W.T`` whose weight gradient reads ``final.value`` in place of ``prev_h``."""

    @staticmethod
    def forward(ctx, prev_h, weight, final: FinalState):
        ctx.final = final
        ctx.weight_dtype = weight.dtype
        return prev_h @ weight.t()

    @staticmethod
    def backward(ctx, grad):
        dtype = ctx.weight_dtype
        return None, grad.to(dtype).t() @ ctx.final.value.to(dtype), None  # prev_h is detached: no gradient


class StaleMul(torch.autograd.Function):
    """``gate * prev_c`` whose gate gradient reads ``final.value`` in place of ``prev_c``."""

    @staticmethod
    def forward(ctx, gate, prev_c, final: FinalState):
        ctx.final = final
        ctx.gate_dtype = gate.dtype
        return gate * prev_c

    @staticmethod
    def backward(ctx, grad):
        return (grad * ctx.final.value.to(grad.dtype)).to(ctx.gate_dtype), None, None


plain_lstm_forward = nn.LSTM.forward


def stale_state_forward(self: nn.LSTM, x: torch.Tensor, hidden):
    """``nn.LSTM.forward`` (batch-first, unidirectional, T >= 2) with the reference's step-1 gradients."""
    if not (self.training and torch.is_grad_enabled()):
        return plain_lstm_forward(self, x, hidden)
    h0, c0 = hidden  # [layers, B, H], detached (carried from the previous chunk)
    finals_h = [FinalState() for _ in range(self.num_layers)]
    finals_c = [FinalState() for _ in range(self.num_layers)]
    step_input = x[:, 0]
    h1, c1 = [], []
    for layer in range(self.num_layers):
        if layer > 0:
            step_input = F.dropout(step_input, self.dropout, training=True)  # as nn.LSTM between layers
        w_ih = getattr(self, f"weight_ih_l{layer}")
        w_hh = getattr(self, f"weight_hh_l{layer}")
        gates = (
            F.linear(step_input, w_ih, getattr(self, f"bias_ih_l{layer}"))
            + getattr(self, f"bias_hh_l{layer}")
            + StaleLinear.apply(h0[layer], w_hh, finals_h[layer])
        )
        i, f, g, o = gates.chunk(4, dim=-1)  # PyTorch's gate order
        c = StaleMul.apply(torch.sigmoid(f), c0[layer], finals_c[layer]) + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        h1.append(h)
        c1.append(c)
        step_input = h
    first = torch.stack(h1), torch.stack(c1)
    rest, (h_n, c_n) = plain_lstm_forward(self, x[:, 1:], (first[0].to(h0.dtype), first[1].to(c0.dtype)))
    for layer in range(self.num_layers):
        finals_h[layer].value = h_n[layer].detach()
        finals_c[layer].value = c_n[layer].detach()
    output = torch.cat([step_input.unsqueeze(1).to(rest.dtype), rest], dim=1)
    return output, (h_n, c_n)


if __name__ == "__main__":
    nn.LSTM.forward = stale_state_forward
    sys.exit(main(["train", *sys.argv[1:]]))
