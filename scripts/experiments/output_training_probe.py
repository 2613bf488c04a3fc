#!/usr/bin/env python
"""Watch the first updates of a training run from inside: how a config's output layer learns.

Runs ``--updates`` updates of ``charlm train``'s own step (:class:`charlm.train.Run`, no files
kept but a scratch folder) and every ``--every`` updates prints the mean training perplexity of
the window, the next chunk's perplexity in training mode (dropout on) and in eval mode, the last
gradient norm, and for a spelling-based output (``model.output: char``) the mean norm of the
output embeddings and the mean and spread of the output biases. ``--pytorch-init-output-cnn``
re-initialises the output's own char-CNN with PyTorch's defaults first (how the finding of
docs/model-parts.md was made, before charlm did so itself).

    python scripts/experiments/output_training_probe.py --data-dir data/ptb \
        --config ptb-char-small-char-output [--updates 400 --every 50] [KEY=VALUE ...]
"""

import argparse
import math
import tempfile

import torch

from charlm.config import load_config
from charlm.train import Run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--config", default="ptb-char-small-char-output")
    ap.add_argument("--updates", type=int, default=400)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--pytorch-init-output-cnn", action="store_true")
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = ap.parse_args()
    config = load_config(args.config, ["train.mixed_precision=bf16", "train.num_threads=1", *args.overrides])
    with tempfile.TemporaryDirectory() as scratch:
        run = Run(config, args.data_dir, scratch, False)
        run.set_lr(config.train.lr)
        model, steps = run.model, config.train.seq_len
        table = getattr(model.output, "word_table", None)
        if args.pytorch_init_output_cnn:
            model.output.char_cnn.embedding.reset_parameters()
            for conv in model.output.char_cnn.convs:
                conv.reset_parameters()
        window = []
        for k in range(args.updates):
            window.append(float(run.update(k)) / steps)
            if (k + 1) % args.every:
                continue
            inputs, targets = run.stream.chunk(k + 1)
            with torch.no_grad():
                train_mode = model(inputs, run.state, targets)[0].float().mean().item()
                model.eval()
                eval_mode = model(inputs, run.state, targets)[0].float().mean().item()
                model.train()
                extra = ""
                if table is not None:
                    weight, bias = table()
                    extra = f" | |e| {weight.norm(dim=1).mean():.2f} | bias {bias.mean():.2f} +- {bias.std():.2f}"
            print(
                f"update {k + 1}: window ppl {math.exp(sum(window) / len(window)):.0f} | next chunk: train mode "
                f"{math.exp(train_mode):.0f}, eval {math.exp(eval_mode):.0f} | grad norm {float(run.grad_norm):.0f}"
                + extra,
                flush=True,
            )
            window = []


if __name__ == "__main__":
    main()
