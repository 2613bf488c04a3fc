"""The Recurrent Highway Network core (Zilly, Srivastava, Koutník & Schmidhuber 2017).

Highway layers inside the recurrent transition. Per time step, ``depth`` micro-layers
l = 1..L update the state s (s_0 is the previous step's s_L); the input x enters the first only::

    h_l = tanh(W_H x [l = 1] + R_H,l s_{l-1} + b_H,l)
    t_l = sigmoid(W_T x [l = 1] + R_T,l s_{l-1} + b_T,l)
    s_l = h_l * t_l + s_{l-1} * (1 - t_l)        (coupled carry gate: c = 1 - t)

The transform-gate biases b_T,l start at ``gate_bias`` (default -2, as in the reference code), so
each micro-layer starts out mostly carrying its state. Dropout is variational, as in the paper: one
mask per sequence on the input, on the state (the same mask for every micro-layer and step) and on
the output. ``weight_drop`` adds DropConnect on the recurrent weights (one mask per chunk).

Speed. The input part of every step of a chunk is one matrix product ``[B*T, D] x [D, 2H]``; only
the recurrent part runs step by step, one ``[B, H] x [H, 2H]`` product per micro-layer. Those
products are small, so the cost of a chunk is the number of operations launched, not their
arithmetic. :class:`RHNScan` runs the whole chunk as one autograd node with a hand-written
backward: no autograd graph of ``T * depth * 7`` nodes, fewer operations per micro-layer, and
the recurrent weights' gradient as one ``[2H, B*T] x [B*T, H]`` product per micro-layer instead
of T small ones. :func:`rhn_reference` is the plain loop it replaces (autograd differentiates
it); the two give the same outputs and, up to float rounding, the same gradients (tests). Under
autocast (bf16 on a CPU or GPU) the products run in the autocast type and the state stays float32,
in both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from charlm.config.schema import PartOptions, check_probability
from charlm.errors import CharlmError
from charlm.nn.core import RecurrentCore, State
from charlm.nn.dropout import LockedDropout, drop_weights, keep_mask
from charlm.nn.registry import register_core

Recurrent = list[tuple[torch.Tensor, torch.Tensor]]
"""Each micro-layer's recurrent weight ``[2H, H]`` (``[R_H,l; R_T,l]``) and bias ``[2H]``."""


def rhn_reference(
    projected: torch.Tensor,
    s: torch.Tensor,
    mask: torch.Tensor | None,
    recurrent: Recurrent,
    gates: list[torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The recurrence, step by step through autograd: ``projected`` ``[B, T, 2H]`` (the input part),
    ``s`` ``[B, H]`` the state before the chunk -> (outputs ``[B, T, H]``, the last state). If
    ``gates`` is a list, each micro-layer's transform gate ``[B, H]`` is appended to it."""
    outputs = []
    for t in range(projected.size(1)):
        for l, (weight, bias) in enumerate(recurrent):
            pre = nn.functional.linear(s if mask is None else s * mask, weight, bias)  # [B, 2H]
            if l == 0:
                pre = pre + projected[:, t]
            h, g = pre.float().chunk(2, dim=-1)
            g = torch.sigmoid(g)
            s = s + g * (torch.tanh(h) - s)  # h * t + s * (1 - t)
            if gates is not None:
                gates.append(g)
        outputs.append(s)
    return torch.stack(outputs, dim=1), s


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    """The type the recurrent products run in: autocast's where it is on, else None (as given)."""
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


class RHNScan(torch.autograd.Function):
    """The recurrence over one chunk as a single autograd node (see the module doc).

    ``RHNScan.apply(projected, s0, mask, compute_dtype, W_1, b_1, ..., W_L, b_L)``: ``projected``
    ``[B, T, 2H]``, ``s0`` ``[B, H]`` (float32), ``mask`` ``[B, H]`` or None, ``compute_dtype`` the
    type of the products (None: the weights' own). Returns (outputs ``[B, T, H]``, last state).

    Micro-layer k = t * depth + l (step t, layer l) reads the state ``states[k]`` and writes
    ``states[k + 1]``; the forward pass keeps those states, the tanh ``h`` and the gate ``g`` of
    every micro-layer, and ``h - s``: the backward pass needs nothing else.
    """

    @staticmethod
    def forward(ctx, projected, s0, mask, compute_dtype, *params):
        weights, biases = list(params[0::2]), list(params[1::2])
        if compute_dtype is not None:  # what autocast does to a linear layer: cast input, weight, bias
            weights = [w.to(compute_dtype) for w in weights]
            biases = [b.to(compute_dtype) for b in biases]
        weights_t = [w.t() for w in weights]
        batch, steps, hidden = projected.size(0), projected.size(1), s0.size(1)
        depth = len(weights)
        states = s0.new_empty(steps * depth + 1, batch, hidden)
        tanhs, gates, diffs = (s0.new_empty(steps * depth, batch, hidden) for _ in range(3))
        states[0] = s0
        with torch.autocast(projected.device.type, enabled=False):
            for t in range(steps):
                for l in range(depth):
                    k = t * depth + l
                    s = states[k]
                    s_in = s if mask is None else s * mask
                    if compute_dtype is not None:
                        s_in = s_in.to(compute_dtype)
                    pre = torch.addmm(biases[l], s_in, weights_t[l])
                    if l == 0:
                        pre = pre + projected[:, t]
                    pre = pre.to(states.dtype)
                    h = torch.tanh(pre[:, :hidden], out=tanhs[k])
                    g = torch.sigmoid(pre[:, hidden:], out=gates[k])
                    d = torch.sub(h, s, out=diffs[k])
                    torch.add(s, g * d, out=states[k + 1])  # h * g + s * (1 - g)
        outputs = states[depth::depth].transpose(0, 1).contiguous()  # [B, T, H]
        ctx.save_for_backward(mask, states, tanhs, gates, diffs, *weights)
        ctx.compute_dtype, ctx.projected_dtype = compute_dtype, projected.dtype
        ctx.param_dtypes = [p.dtype for p in params]
        return outputs, outputs[:, -1].clone()

    @staticmethod
    def backward(ctx, grad_outputs, grad_last):
        mask, states, tanhs, gates, diffs, *weights = ctx.saved_tensors
        depth = len(weights)
        steps, (batch, hidden) = tanhs.size(0) // depth, tanhs.shape[1:]
        compute_dtype = ctx.compute_dtype
        # The gradient of every micro-layer's [B, 2H] pre-activation, in order k.
        grad_pre = tanhs.new_empty(steps * depth, batch, 2 * hidden)
        ds = grad_last.to(tanhs.dtype) if grad_last is not None else tanhs.new_zeros(batch, hidden)
        with torch.autocast(tanhs.device.type, enabled=False):
            for t in reversed(range(steps)):
                if grad_outputs is not None:
                    ds = ds + grad_outputs[:, t]
                for l in reversed(range(depth)):
                    k = t * depth + l
                    h, g = tanhs[k], gates[k]
                    dh = ds * g  # s' = s + g (h - s)
                    torch.mul(dh, 1.0 - h * h, out=grad_pre[k, :, :hidden])  # through tanh
                    torch.mul(ds * diffs[k], g * (1.0 - g), out=grad_pre[k, :, hidden:])  # through sigmoid
                    ds = ds - dh  # the carried part, (1 - g) ds
                    pre_k = grad_pre[k] if compute_dtype is None else grad_pre[k].to(compute_dtype)
                    into_state = torch.mm(pre_k, weights[l]).to(ds.dtype)
                    ds = ds + (into_state if mask is None else into_state * mask)
            # The weights' gradients: one product per micro-layer over all steps of the chunk.
            per_layer = grad_pre.view(steps, depth, batch, 2 * hidden)
            inputs = states[:-1].view(steps, depth, batch, hidden)
            grads = []
            for l in range(depth):
                grad_l = per_layer[:, l].reshape(steps * batch, 2 * hidden)
                input_l = inputs[:, l] if mask is None else inputs[:, l] * mask
                input_l = input_l.reshape(steps * batch, hidden)
                if compute_dtype is not None:
                    grad_w = torch.mm(grad_l.to(compute_dtype).t(), input_l.to(compute_dtype))
                else:
                    grad_w = torch.mm(grad_l.t(), input_l)
                grads += [grad_w.to(ctx.param_dtypes[2 * l]), grad_l.sum(0).to(ctx.param_dtypes[2 * l + 1])]
        grad_projected = per_layer[:, 0].transpose(0, 1).to(ctx.projected_dtype)  # [B, T, 2H]
        return (grad_projected, ds, None, None, *grads)


def rhn_scan(
    projected: torch.Tensor, s: torch.Tensor, mask: torch.Tensor | None, recurrent: Recurrent
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`rhn_reference`'s result through :class:`RHNScan` (one autograd node)."""
    params = [p for pair in recurrent for p in pair]
    return RHNScan.apply(projected, s, mask, _autocast_dtype(projected.device.type), *params)


@dataclass
class RHNOptions(PartOptions):
    """``model.core: {name: rhn, ...}``: a Recurrent Highway Network (Zilly et al. 2017), highway
    layers inside the recurrent transition."""

    name: str = "rhn"

    depth: int = 2
    """Recurrence depth: highway micro-layers per time step."""

    gate_bias: float = -2.0
    """Added to the transform-gate biases at initialisation (the reference code: -2), so each
    micro-layer starts out mostly carrying its state."""

    state_dropout: float = 0.0
    """Variational dropout on the recurrent state (one mask per sequence, the same for every
    micro-layer and time step). The RHN's input and output dropout are always variational."""

    weight_drop: float = 0.0
    """DropConnect probability on the recurrent weights ``R_l`` (as AWD-LSTM's on the LSTM's
    hidden-to-hidden weights), one mask per chunk (0: none)."""

    def check(self, model) -> None:
        if self.depth < 1:
            raise CharlmError(f"model.core.depth must be at least 1, got {self.depth}")
        check_probability("model.core.state_dropout", self.state_dropout)
        check_probability("model.core.weight_drop", self.weight_drop)


@register_core("rhn", RHNOptions)
class RHNCore(RecurrentCore):
    """A recurrent highway network of recurrence depth ``depth``; state ``{"s"}`` ``[B, H]``."""

    state_batch_dims = {"s": 0}

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        depth: int,
        *,
        gate_bias: float = -2.0,
        input_dropout: float = 0.0,
        state_dropout: float = 0.0,
        output_dropout: float = 0.0,
        weight_drop: float = 0.0,
        fused: bool = True,
    ):
        super().__init__()
        if depth < 1:
            raise ValueError(f"RHN depth must be at least 1, got {depth}")
        self.input_size, self.output_size, self.depth = input_size, hidden_size, depth
        self.gate_bias = gate_bias
        self.fused = fused  # RHNScan (False: rhn_reference, the plain loop)
        self.input_weight = nn.Linear(input_size, 2 * hidden_size, bias=False)  # [W_H; W_T]
        self.recurrent = nn.ModuleList(
            nn.Linear(hidden_size, 2 * hidden_size) for _ in range(depth)
        )  # [R_H,l; R_T,l], b_l
        self.input_dropout = LockedDropout(input_dropout)
        self.state_dropout = state_dropout
        self.weight_drop = weight_drop
        self.output_dropout = LockedDropout(output_dropout)

    @classmethod
    def describe(cls, config) -> str:
        return f"RHN {config.hidden_size}, depth {config.core.depth}"

    @classmethod
    def flops_per_token(cls, config, input_size: int) -> float:
        """The input enters the first micro-layer; each micro-layer is an ``[H, 2H]`` product."""
        h = config.hidden_size
        return 2 * 2 * h * input_size + config.core.depth * 2 * h * 2 * h

    @classmethod
    def from_config(cls, config, input_size: int) -> "RHNCore":
        return cls(
            input_size,
            config.hidden_size,
            config.core.depth,
            gate_bias=config.core.gate_bias,
            input_dropout=config.input_dropout,
            state_dropout=config.core.state_dropout,
            output_dropout=config.dropout,
            weight_drop=config.core.weight_drop,
        )

    def transform_gate_biases(self) -> list[torch.Tensor]:
        return [layer.bias[self.output_size :] for layer in self.recurrent]

    def initialise_after_uniform(self) -> None:
        with torch.no_grad():
            for bias in self.transform_gate_biases():
                bias.add_(self.gate_bias)

    def initial_state(self, batch_size: int) -> State:
        return {"s": self._zeros(batch_size, self.output_size)}

    def forward(
        self, x: torch.Tensor, state: State, gates: list[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, State]:
        """``x`` ``[B, T, D]`` -> ``[B, T, H]``. If ``gates`` is a list, the transform gates of every
        step are appended to it as ``[B, T, depth, H]``."""
        s = state["s"]
        projected = self.input_weight(self.input_dropout(x))  # [B, T, 2H]: the input part, all steps at once
        mask = None
        if self.training and self.state_dropout > 0.0:
            mask = keep_mask(s.shape, self.state_dropout, s)  # [B, H], the same at every step
        recurrent = [(drop_weights(r.weight, self.weight_drop, self.training), r.bias) for r in self.recurrent]
        if gates is not None or not self.fused:
            step_gates = [] if gates is not None else None
            outputs, s = rhn_reference(projected, s, mask, recurrent, step_gates)
            if gates is not None:
                gates.append(torch.stack(step_gates, 1).view(x.size(0), x.size(1), self.depth, -1))
        else:
            outputs, s = rhn_scan(projected, s, mask, recurrent)
        return self.output_dropout(outputs), {"s": s}
