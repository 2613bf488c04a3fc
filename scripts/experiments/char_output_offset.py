#!/usr/bin/env python
"""Why the `char` output centres its word table: the common part of the output embeddings grows,
and bf16 logits lose the differences between words under a common offset.

Trains ``--updates`` updates of ``charlm train``'s own step (bf16, one thread) and prints, every
``--every`` updates, the norm of the common part the layer removes (``|P mean(f) + Q mean(c)|``,
the mean of the uncentred rows' embedding part) next to the spread of the rows around it. Then it
adds a vector of norm 0, 100, 250 and 500 along that common part to every word's embedding
(which changes no probability) and scores the next chunk in eval mode in float32 and under bf16 autocast: the
float32 perplexity stays put, the bf16 one does not.

    python scripts/experiments/char_output_offset.py --data-dir data/ptb [--updates 300 --every 100]
"""

import argparse
import contextlib
import math
import tempfile

import torch

from charlm.config import load_config
from charlm.memory import keep_freed_memory
from charlm.model import CharLM
from charlm.train import Run

OFFSETS = (0.0, 100.0, 250.0, 500.0)


def common_part(output) -> tuple[torch.Tensor, float]:
    """The mean uncentred embedding row, and the mean norm of the centred rows."""
    features = output.spelling_features(output.spellings)
    plain = output.projection(features)[:, :-1]
    if output.correction is not None:
        plain = plain + output.correction_projection(output.correction.weight)[:, :-1]
    common = plain.mean(0)
    return common, (plain - common).norm(dim=1).mean().item()


@contextlib.contextmanager
def offset_table(output, vector: torch.Tensor):
    """Every word's embedding plus ``vector`` while inside."""
    table = output.word_table
    output.word_table = lambda: (lambda w, b: (w + vector.to(w.dtype), b))(*table())
    try:
        yield
    finally:
        del output.word_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--config", default="ptb-char-small-char-output")
    ap.add_argument("--updates", type=int, default=300)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = ap.parse_args()
    keep_freed_memory()
    config = load_config(args.config, ["train.mixed_precision=bf16", "train.num_threads=1", *args.overrides])
    with tempfile.TemporaryDirectory() as scratch:
        run = Run(config, args.data_dir, scratch, False)
        run.set_lr(config.train.lr)
        for k in range(args.updates):
            run.update(k)
            if (k + 1) % args.every == 0:
                with torch.no_grad():
                    common, spread = common_part(run.raw_model.output)
                print(
                    f"update {k + 1}: common part {common.norm():.2f} | spread of the rows around it {spread:.2f}",
                    flush=True,
                )
        # a copy outside accelerate, whose wrapper would run every forward under bf16 autocast
        model = CharLM(run.raw_model.config, run.raw_model.encoder.spellings)
        model.load_state_dict(run.raw_model.state_dict())
        model.eval()
        inputs, targets = run.stream.chunk(args.updates)
        with torch.no_grad():  # along the common part itself (a random direction is nearly orthogonal to h)
            direction = torch.nn.functional.normalize(common_part(model.output)[0], dim=0)
            for size in OFFSETS:
                with offset_table(model.output, size * direction):
                    fp32 = model(inputs, run.state, targets)[0].float().mean().item()
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        bf16 = model(inputs, run.state, targets)[0].float().mean().item()
                print(
                    f"common offset {size:.0f}: next chunk eval perplexity float32 {math.exp(fp32):.1f} | "
                    f"bf16 {math.exp(bf16):.1f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
