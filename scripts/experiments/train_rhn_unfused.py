"""``charlm train`` with the RHN core's plain step-by-step loop (``RHNCore(fused=False)``) instead of
the fused scan: the other half of the fused-versus-loop record in docs/model-parts.md.

    python scripts/experiments/train_rhn_unfused.py --config ptb-char-small-rhn-depth4 \
        --data-dir data/ptb --output-dir runs/rhn4-loop train.max_epochs=2 train.mixed_precision=fp32
"""

import functools
import sys

from charlm.cli import main
from charlm.nn import RHNCore

original = RHNCore.from_config.__func__


@functools.wraps(original)
def unfused(cls, config, input_size):
    core = original(cls, config, input_size)
    core.fused = False
    return core


if __name__ == "__main__":
    RHNCore.from_config = classmethod(unfused)
    sys.exit(main(["train", *sys.argv[1:]]))
