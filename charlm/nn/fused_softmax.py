"""The fused softmax: ``cross_entropy(h @ W.T + b, targets)`` in one autograd node.

The usual way (a Linear, then ``F.cross_entropy``) writes the logits ``[N, V]``, reads them for log-
softmax, writes a gradient of the same size filled with zeros and scattered, reads it again for the
log-softmax backward, and only then multiplies by the weights. With a 10,000-word vocabulary those
elementwise passes cost as much time on a CPU as the matrix products.

Here the forward pass computes the loss and, in the same sweep over each block of rows, the
gradient of the loss with respect to the logits, ``softmax(logits) - onehot(target)``, which it
keeps for the backward pass. The backward pass is then two matrix products: no elementwise pass
over ``[N, V]`` at all (the per-row incoming gradient is applied to the small ``[N, H]`` side).
The numbers are those of ``F.cross_entropy`` up to float rounding (checked in the tests).
"""

from __future__ import annotations

import torch

ROWS_PER_BLOCK = 256  # rows of logits handled together: [256, V] stays in cache-sized pieces


def _blockwise_nll(hidden, weight, bias, targets, grad_logits=None) -> torch.Tensor:
    """Per-row ``logsumexp(logits) - logits[target]`` computed ``ROWS_PER_BLOCK`` rows at a time;
    if ``grad_logits`` ``[N, V]`` is given, also fill it with ``softmax(logits) - onehot``."""
    losses = hidden.new_empty(hidden.size(0), dtype=torch.float32)
    for start in range(0, hidden.size(0), ROWS_PER_BLOCK):
        rows = slice(start, start + ROWS_PER_BLOCK)
        logits = torch.addmm(bias, hidden[rows], weight.t()).float()  # [n_b, V]
        target_logit = logits.gather(1, targets[rows, None]).squeeze(1)  # [n_b]
        top = logits.amax(dim=1, keepdim=True)  # [n_b, 1], for a stable exp
        probs = logits.sub_(top).exp_()  # unnormalised softmax, in place: one exp pass
        total = probs.sum(dim=1, keepdim=True)  # [n_b, 1]
        losses[rows] = (top + total.log()).squeeze(1) - target_logit  # logsumexp - target
        if grad_logits is not None:
            probs.div_(total)
            probs.scatter_add_(1, targets[rows, None], probs.new_full((probs.size(0), 1), -1.0))
            grad_logits[rows] = probs
    return losses


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets):
        # hidden [N, H], weight [V, H], bias [V], targets [N] -> per-row loss [N] (float32)
        grad_logits = hidden.new_empty(hidden.size(0), weight.size(0))  # [N, V] in the compute dtype
        losses = _blockwise_nll(hidden, weight, bias, targets, grad_logits)
        ctx.save_for_backward(hidden, weight, grad_logits)
        return losses

    @staticmethod
    def backward(ctx, grad_losses):
        hidden, weight, grad_logits = ctx.saved_tensors
        scale = grad_losses.to(hidden.dtype)[:, None]  # [N, 1]
        # d loss / d logits = scale * grad_logits; fold the per-row scale into the [N, H] side.
        grad_hidden = (grad_logits @ weight) * scale if ctx.needs_input_grad[0] else None
        grad_weight = grad_logits.t() @ (hidden * scale) if ctx.needs_input_grad[1] else None
        grad_bias = (scale.t() @ grad_logits).squeeze(0) if ctx.needs_input_grad[2] else None
        return grad_hidden, grad_weight, grad_bias, None


def linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """Per-row ``-log softmax(hidden @ weight.T + bias)[target]``, as a float32 tensor ``[N]``.

    Under autocast the matrix products run in the autocast dtype (weights cast like a Linear's);
    the softmax and the loss are always computed in float32. Where no gradient is needed (no grad
    mode, or no input requires one), only the loss is computed: no ``[N, V]`` gradient is kept.
    """
    if torch.is_autocast_enabled(hidden.device.type):
        dtype = torch.get_autocast_dtype(hidden.device.type)
        hidden, weight, bias = hidden.to(dtype), weight.to(dtype), bias.to(dtype)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (hidden, weight, bias))
    with torch.autocast(hidden.device.type, enabled=False):
        if not needs_grad:
            return _blockwise_nll(hidden, weight, bias, targets)
        return _LinearCrossEntropy.apply(hidden, weight, bias, targets)
