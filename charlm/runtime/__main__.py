"""``python -m charlm.runtime``: print what a run started this way would use here."""

import os
import sys

import torch

from charlm.runtime import (
    available_cores,
    choose_precision,
    configure_threads,
    device_name,
    launch_device_type,
    local_process_count,
)


def main() -> int:
    device_type = launch_device_type()
    threads = configure_threads()
    precision = choose_precision("auto", device_type)  # no model to time: the launcher's choice, or the cache
    print(
        f"process {os.environ.get('RANK', '0')}: {threads} thread(s) (cores {available_cores()}, local processes "
        f"{local_process_count()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}), "
        f"torch.get_num_threads() {torch.get_num_threads()}, device {device_type} ({device_name(device_type)}), "
        f"precision auto -> {precision.precision} ({precision.reason}) "
        f"(ACCELERATE_MIXED_PRECISION={os.environ.get('ACCELERATE_MIXED_PRECISION', 'unset')})",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
