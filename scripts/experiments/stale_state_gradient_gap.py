#!/usr/bin/env python
"""How far the reference's uncloned carried state moves a trained model's gradient.

For ``--chunks`` consecutive training chunks (state carried from the start of the training
stream, dropout off, fp32) it computes the gradient twice, the plain way and the way
``reference_stale_state.py`` trains, and prints the mean of ``|g_stale - g| / |g|`` over all
parameters and over the recurrent weights alone. For scale it also prints the mean of
``|g_next - g| / |g|`` between consecutive chunks (plain gradients): the minibatch noise.

    python scripts/experiments/stale_state_gradient_gap.py --checkpoint RUN/best --data-dir DATA
"""

import argparse
import importlib.util
import sys
from pathlib import Path

import _measure  # this folder's shared options and error handling
import torch
from torch import nn

from charlm.checkpoint import load_model
from charlm.corpus import TextStream, load_corpus
from charlm.errors import CharlmError
from charlm.nn import detach_state
from charlm.train import sequence_loss

_script = Path(__file__).with_name("reference_stale_state.py")
_spec = importlib.util.spec_from_file_location("reference_stale_state", _script)
stale = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(stale)


def gradient(model, inputs, targets, hidden, lstm_forward):
    """(all parameters' gradient, the recurrent weights' gradient, the next hidden state)."""
    nn.LSTM.forward = lstm_forward
    model.zero_grad()
    nll, hidden = model(inputs, hidden, targets)
    sequence_loss(nll).backward()
    flat = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    recurrent = torch.cat(
        [getattr(model.core.lstm, f"weight_hh_l{i}").grad.flatten() for i in range(model.core.lstm.num_layers)]
    )
    return flat, recurrent, detach_state(hidden)


def main() -> int:
    parser = _measure.parser(__doc__.splitlines()[0], chunks=20)
    parser.add_argument("--skip", type=int, default=100, help="chunks run forward first, to warm the state")
    return _measure.run(measure, parser.parse_args())


def measure(args: argparse.Namespace) -> None:
    if args.chunks < 2 or args.skip < 0:
        raise CharlmError("--chunks must be at least 2 (consecutive chunks are compared) and --skip at least 0")
    model, _ = load_model(args.checkpoint)
    model.train()  # the training path, with every dropout off so both gradients see the same net
    model.core.lstm.dropout = 0.0
    model.core.output_dropout.p = 0.0
    batch_size = args.batch_size
    stream = TextStream(load_corpus(args.data_dir)[1]["train"], batch_size, args.seq_len, 0, batch_size)
    if stream.num_chunks < args.skip + args.chunks:
        raise CharlmError(
            f"the training split has {stream.num_chunks} chunks, fewer than --skip + --chunks; lower them"
        )
    hidden = model.initial_state(batch_size)
    with torch.no_grad():
        for k in range(args.skip):
            hidden = model(stream.chunk(k)[0], hidden)[1]
    gaps, recurrent_gaps, noise, previous = [], [], [], None
    for k in range(args.skip, args.skip + args.chunks):
        inputs, targets = stream.chunk(k)
        plain, plain_recurrent, next_hidden = gradient(model, inputs, targets, hidden, stale.plain_lstm_forward)
        quirk, quirk_recurrent, _ = gradient(model, inputs, targets, hidden, stale.stale_state_forward)
        gaps.append(float((quirk - plain).norm() / plain.norm()))
        recurrent_gaps.append(float((quirk_recurrent - plain_recurrent).norm() / plain_recurrent.norm()))
        if previous is not None:
            noise.append(float((plain - previous).norm() / plain.norm()))
        previous, hidden = plain, next_hidden
    nn.LSTM.forward = stale.plain_lstm_forward
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    print(
        f"|g_stale - g| / |g|: {mean(gaps):.3f} (max {max(gaps):.3f}); recurrent weights only: "
        f"{mean(recurrent_gaps):.3f}; consecutive chunks |g_next - g| / |g|: {mean(noise):.3f}"
    )


if __name__ == "__main__":
    sys.exit(main())
