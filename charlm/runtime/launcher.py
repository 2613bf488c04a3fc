"""What the launcher that started this process set: its process count, device, and options.

The same training can be started as ``charlm train``, ``python scripts/train.py``, ``accelerate
launch`` with or without ``--cpu``, or with several processes. Each launcher leaves its own marks
on the environment; these functions read them so that :mod:`charlm.runtime.threads` and
:mod:`charlm.runtime.precision` can tell a user's choice from a launcher's default.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

# Environment variables that hold the number of processes on this machine, in the order read:
# torchrun (what `accelerate launch` with several processes uses), then MPI implementations.
LOCAL_SIZE_VARIABLES = (
    "LOCAL_WORLD_SIZE",
    "MPI_LOCALNRANKS",
    "OMPI_COMM_WORLD_LOCAL_SIZE",
    "MV2_COMM_WORLD_LOCAL_SIZE",
)


def local_process_count() -> int:
    """How many processes of this run share this machine, as the launcher says (1 if none does)."""
    for name in LOCAL_SIZE_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


def launch_device_type() -> str:
    """The device type ``Accelerator()`` will pick: ``cpu`` when ``ACCELERATE_USE_CPU`` is set
    (``accelerate launch --cpu``) or there is no CUDA, else ``cuda``."""
    use_cpu = os.environ.get("ACCELERATE_USE_CPU", "").strip().lower() in ("1", "true", "yes", "on")
    return "cpu" if use_cpu or not torch.cuda.is_available() else "cuda"


def accelerate_precision_choice() -> str:
    """accelerate's mixed precision if the user chose one, else ``''``.

    ``accelerate launch`` exports ``ACCELERATE_MIXED_PRECISION`` to its processes: the value of
    ``--mixed_precision`` or of the config file, and ``no`` when it had neither. So ``bf16``,
    ``fp16`` or ``fp8`` are choices; ``no`` is one only if the launcher's command line has
    ``--mixed_precision`` or a config file was read (the launcher's own rule), or if no
    ``accelerate launch`` is found among this process's parents (someone set the variable).
    """
    value = os.environ.get("ACCELERATE_MIXED_PRECISION", "").strip().lower()
    if value != "no":
        return value
    launch = accelerate_launch_arguments()
    if launch is None:
        return "no"
    from accelerate.commands.config import default_config_file

    chose = (
        launch.mixed_precision is not None
        or launch.config_file is not None
        or (os.path.isfile(default_config_file) and not launch.cpu)
    )
    return "no" if chose else ""


def accelerate_launch_arguments(max_depth: int = 3) -> argparse.Namespace | None:
    """The parsed options of the ``accelerate launch`` that started this process: the nearest of
    its parents (up to ``max_depth`` levels) whose command line is one; None if there is none or
    ``/proc`` cannot be read (not Linux)."""
    from accelerate.commands.launch import launch_command_parser

    pid = os.getpid()
    for _ in range(max_depth):
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])  # the parent
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
        except (OSError, IndexError, ValueError):
            return None
        options = after_launch_command(argv)
        if options is not None:
            try:
                return launch_command_parser().parse_known_args(options)[0]
            except SystemExit:  # not a command line the launcher accepts after all
                return None
    return None


def after_launch_command(argv: list[str]) -> list[str] | None:
    """The launcher's options if ``argv`` runs ``accelerate launch`` (``accelerate launch ...``,
    ``accelerate-launch ...`` or ``python -m accelerate.commands.launch ...``), else None."""
    for i, arg in enumerate(argv[:4]):
        name = os.path.basename(arg)
        if arg == "accelerate.commands.launch" or name == "accelerate-launch":
            return argv[i + 1 :]
        if name == "accelerate" and argv[i + 1 : i + 2] == ["launch"]:
            return argv[i + 2 :]
    return None
