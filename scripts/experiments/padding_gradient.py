#!/usr/bin/env python
"""How large the character padding row's gradient is, and what counting it in the clipped norm does.

The reference code lets the padding character's embedding row take a gradient like any other row
(it is zeroed again after each update), so the global norm it clips at 5 includes that row's
gradient. charlm does the same by default; ``train.clip_padding_gradient=false`` freezes the row
(no gradient) instead. For ``--chunks`` consecutive chunks from the start of the training stream
(state carried, dropout on as in training, fp32) this prints the mean norm of the padding row's
gradient and of all the other gradients together, how many chunks the clip acts on with and
without the row, and the mean factor by which counting the row shrinks the other parameters' step:
``min(1, clip / |g_all|) / min(1, clip / |g_others|)``.

    python scripts/experiments/padding_gradient.py --checkpoint RUN/best --data-dir DATA [--init]
"""

import argparse
import sys
from statistics import fmean as mean

import _measure  # this folder's shared options and error handling
import torch

from charlm.checkpoint import load_model
from charlm.corpus import TextStream, load_corpus
from charlm.errors import CharlmError
from charlm.nn import detach_state
from charlm.text import PAD_CHAR
from charlm.train import sequence_loss


def main() -> int:
    parser = _measure.parser(__doc__.splitlines()[0], chunks=40)
    parser.add_argument("--init", action="store_true", help="measure the checkpoint's architecture freshly initialised")
    parser.add_argument("--clip", type=float, default=5.0, help="the clipping norm (train.grad_clip)")
    parser.add_argument("--seed", type=int, default=0, help="for the dropout masks")
    return _measure.run(measure, parser.parse_args())


def measure(args: argparse.Namespace) -> None:
    if args.chunks < 1 or args.clip <= 0:
        raise CharlmError("--chunks must be at least 1 and --clip positive")
    model, _ = load_model(args.checkpoint)
    if model.encoder.char_cnn is None:
        raise CharlmError(f"{args.checkpoint} is a word-level model: it has no character padding row")
    torch.manual_seed(args.seed)
    if args.init:
        model.reset_parameters()
    model.set_padding_gradient(True)
    model.train()
    stream = TextStream(load_corpus(args.data_dir)[1]["train"], args.batch_size, args.seq_len, 0, args.batch_size)
    if stream.num_chunks < args.chunks:
        raise CharlmError(f"the training split has {stream.num_chunks} chunks, fewer than --chunks; lower it")
    hidden = model.initial_state(args.batch_size)
    padding, others, clipped_without, clipped_with, shrink = [], [], 0, 0, []
    for k in range(args.chunks):
        inputs, targets = stream.chunk(k)
        model.zero_grad()
        nll, hidden = model(inputs, hidden, targets)
        hidden = detach_state(hidden)
        sequence_loss(nll).backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        total = torch.sqrt(sum(g.pow(2).sum() for g in grads)).item()
        pad = model.encoder.char_cnn.embedding.weight.grad[PAD_CHAR].norm().item()
        rest = (total**2 - pad**2) ** 0.5
        padding.append(pad)
        others.append(rest)
        clipped_without += rest > args.clip
        clipped_with += total > args.clip
        shrink.append(min(1.0, args.clip / total) / min(1.0, args.clip / rest))
    print(
        f"padding row |g|: {mean(padding):.3f} (max {max(padding):.3f}); all other parameters |g|: "
        f"{mean(others):.3f}; clipped at {args.clip:g}: {clipped_without}/{args.chunks} chunks without the row, "
        f"{clipped_with}/{args.chunks} with it; their step shrinks by {mean(shrink):.3f} on average"
    )


if __name__ == "__main__":
    sys.exit(main())
