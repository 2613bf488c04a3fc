"""The LSTM core: the paper's stacked LSTM, plus AWD-LSTM's regularisers as options.

Without options it is one ``nn.LSTM`` (PyTorch's fused kernel: oneDNN on CPUs, cuDNN on GPUs)
with ``nn.LSTM``'s own dropout between layers and :class:`~charlm.nn.dropout.Dropout` on the
output, exactly the paper's model. With ``locked_dropout`` the dropout on the input, between
layers and on the output uses one mask per sequence (:class:`~charlm.nn.dropout.LockedDropout`),
and ``weight_drop`` applies DropConnect to the hidden-to-hidden weights (one mask per chunk); then
the layers run one at a time through the same fused kernel (``torch.lstm``), with the regularised
weights. The parameters are those of the one ``nn.LSTM`` either way, so a model trained with the
options loads and scores like any other.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from charlm.config.schema import PartOptions, check_probability
from charlm.errors import CharlmError
from charlm.nn.core import RecurrentCore, State
from charlm.nn.dropout import Dropout, LockedDropout, drop_weights
from charlm.nn.registry import register_core


@dataclass
class LSTMOptions(PartOptions):
    """``model.core: {name: lstm, ...}``: the paper's stacked LSTM."""

    name: str = "lstm"

    layers: int = 2
    """Number of stacked LSTM layers, each of model.hidden_size."""

    recurrent_bias: bool = True
    """Two bias vectors per gate (input and recurrent, simply added), as in PyTorch's LSTM and the
    reference Torch code: SGD moves their sum twice as fast as one bias. The paper's equations have
    one bias per gate: false keeps the recurrent one at zero and out of training."""

    locked_dropout: bool = False
    """Variational (locked) dropout, one mask per sequence reused at every time step, on the input,
    between layers and on the output, instead of a new mask per element."""

    weight_drop: float = 0.0
    """DropConnect probability on the hidden-to-hidden weights (AWD-LSTM), one mask per chunk (0: none)."""

    def check(self, model) -> None:
        if self.layers < 1:
            raise CharlmError(f"model.core.layers must be at least 1, got {self.layers}")
        check_probability("model.core.weight_drop", self.weight_drop)


@register_core("lstm", LSTMOptions)
class LSTMCore(RecurrentCore):
    """``num_layers`` stacked LSTM layers of ``hidden_size``; state ``{"h", "c"}`` ``[layers, B, H]``.

    Args:
        dropout: between layers and on the output (the paper: 0.5; none on the input).
        recurrent_bias: two bias vectors per gate, as ``nn.LSTM`` and the reference code; false
            holds the recurrent one at zero, out of training (the paper's equations).
        locked_dropout: variational dropout (one mask per sequence) instead of per element.
        input_dropout: dropout on the core's input (0: none, as in the paper).
        weight_drop: DropConnect probability on the hidden-to-hidden weights (0: none).
    """

    state_batch_dims = {"h": 1, "c": 1}

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int,
        dropout: float,
        *,
        recurrent_bias: bool = True,
        locked_dropout: bool = False,
        input_dropout: float = 0.0,
        weight_drop: float = 0.0,
    ):
        super().__init__()
        self.input_size, self.output_size, self.num_layers = input_size, hidden_size, num_layers
        self.lstm = nn.LSTM(
            input_size, hidden_size, num_layers=num_layers, dropout=dropout if num_layers > 1 else 0.0, batch_first=True
        )
        self.recurrent_bias = recurrent_bias
        for bias in self.frozen_recurrent_biases():
            bias.requires_grad_(False)
        drop = LockedDropout if locked_dropout else Dropout
        self.input_dropout = drop(input_dropout)
        self.between_dropout = drop(dropout)  # the layer-by-layer path only; nn.LSTM has its own
        self.output_dropout = drop(dropout)
        self.weight_drop = weight_drop
        # The single fused call is the paper's model; anything else runs layer by layer.
        self.layer_by_layer = locked_dropout or weight_drop > 0.0

    @classmethod
    def describe(cls, config) -> str:
        return f"LSTM {config.core.layers}x{config.hidden_size}"

    @classmethod
    def flops_per_token(cls, config, input_size: int) -> float:
        h = config.hidden_size
        return sum(2 * 4 * h * ((input_size if i == 0 else h) + h) for i in range(config.core.layers))

    @classmethod
    def from_config(cls, config, input_size: int) -> "LSTMCore":
        return cls(
            input_size,
            config.hidden_size,
            config.core.layers,
            config.dropout,
            recurrent_bias=config.core.recurrent_bias,
            locked_dropout=config.core.locked_dropout,
            input_dropout=config.input_dropout,
            weight_drop=config.core.weight_drop,
        )

    def frozen_recurrent_biases(self) -> list[torch.Tensor]:
        """The recurrent biases held at zero (only when ``recurrent_bias`` is false)."""
        if self.recurrent_bias:
            return []
        return [getattr(self.lstm, f"bias_hh_l{layer}") for layer in range(self.num_layers)]

    def initialise_after_uniform(self) -> None:
        with torch.no_grad():
            for bias in self.frozen_recurrent_biases():  # zeroed after the draw: same RNG stream
                bias.zero_()

    def initial_state(self, batch_size: int) -> State:
        shape = (self.num_layers, batch_size, self.output_size)
        return {"h": self._zeros(*shape), "c": self._zeros(*shape)}

    def forward(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        x = self.input_dropout(x)
        if not (self.training and self.layer_by_layer):
            y, (h, c) = self.lstm(x, (state["h"], state["c"]))
            return self.output_dropout(y), {"h": h, "c": c}
        hs, cs = [], []
        for i in range(self.num_layers):
            if i > 0:
                x = self.between_dropout(x)
            weights = self.layer_weights(i)
            weights[1] = drop_weights(weights[1], self.weight_drop, self.training)
            x, h, c = torch.lstm(
                x, (state["h"][i : i + 1], state["c"][i : i + 1]), weights, True, 1, 0.0, self.training, False, True
            )
            hs.append(h)
            cs.append(c)
        return self.output_dropout(x), {"h": torch.cat(hs), "c": torch.cat(cs)}

    def layer_weights(self, i: int) -> list[torch.Tensor]:
        """``[weight_ih, weight_hh, bias_ih, bias_hh]`` of layer ``i``."""
        return [getattr(self.lstm, f"{name}_l{i}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]

    def stages(self) -> list[RecurrentCore]:
        return [_LSTMLayer(self, i) for i in range(self.num_layers)]


class _LSTMLayer(RecurrentCore):
    """Layer ``i`` of an :class:`LSTMCore` as a core of its own (eval only; shares the weights)."""

    state_batch_dims = {"h": 1, "c": 1}

    def __init__(self, core: LSTMCore, i: int):
        super().__init__()
        self.input_size = core.input_size if i == 0 else core.output_size
        self.output_size = core.output_size
        self.lstm = nn.LSTM(self.input_size, self.output_size, 1, batch_first=True, device="meta")
        for name, weight in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"), core.layer_weights(i)):
            setattr(self.lstm, f"{name}_l0", weight)

    def initial_state(self, batch_size: int) -> State:
        shape = (1, batch_size, self.output_size)
        return {"h": self._zeros(*shape), "c": self._zeros(*shape)}

    def forward(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        y, (h, c) = self.lstm(x, (state["h"], state["c"]))
        return y, {"h": h, "c": c}
