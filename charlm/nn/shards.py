"""Work split across the processes of a data-parallel run, with gradients.

A part that every process would otherwise compute whole (the ``char`` output's table of every
vocabulary word) can be computed in shares: process r computes rows ``r*S .. (r+1)*S`` and
:func:`gather_shards` hands every process the whole. Each process's loss depends on every row,
so the backward pass sums, for each share, the gradients of all processes' losses and gives the
owner its own rows; the data-parallel averaging of parameter gradients then yields exactly the
gradient of the averaged loss, as if every process had computed every row.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def shard_count() -> int:
    """The number of processes of the data-parallel group (1 outside one)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def my_share(rows: int) -> slice:
    """The rows ``0 .. rows-1`` this process computes: a contiguous share of ``ceil(rows / n)``."""
    size = -(-rows // shard_count())
    start = min(rows, dist.get_rank() * size) if shard_count() > 1 else 0
    return slice(start, min(rows, start + size))


def gather_shards(share: torch.Tensor, rows: int) -> torch.Tensor:
    """Every process's :func:`my_share` of a ``[rows, ...]`` tensor -> the whole tensor, on every
    process; differentiable (see the module docstring). Exchanged in float32 (any backend)."""
    whole = _GatherShards.apply(share.float(), rows)
    return whole.to(share.dtype)


class _GatherShards(torch.autograd.Function):
    @staticmethod
    def forward(ctx, share: torch.Tensor, rows: int) -> torch.Tensor:
        n = shard_count()
        size = -(-rows // n)
        padded = share.new_zeros((size, *share.shape[1:]))  # equal sizes for all_gather
        padded[: share.size(0)] = share
        parts = [torch.empty_like(padded) for _ in range(n)]
        dist.all_gather(parts, padded)
        ctx.mine, ctx.rows = my_share(rows), rows
        return torch.cat(parts)[:rows]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous()
        dist.all_reduce(grad)  # every process's loss reached every row: sum their gradients
        return grad[ctx.mine], None
