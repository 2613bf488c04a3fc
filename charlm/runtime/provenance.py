"""What a recorded figure belongs to: the code (git commit) and the machine that produced it.

:func:`run_record` is written into every exported model's ``config.json`` (``"run"``), and
``charlm perplexity --json`` repeats it beside the score, so a test record names its config, its
trained parameter count, its epochs, seed, precision, device and commit.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

import charlm
from charlm.runtime.precision import device_name

PACKAGE_DIR = Path(charlm.__file__).resolve().parent


@functools.cache
def source_commit() -> str | None:
    """The git commit of the charlm source that is running, with ``-dirty`` when tracked files
    differ from it; None for an installed wheel (no git checkout around the package).

    Read once per process, on the first call (training calls it at its start): a checkout that
    moves on while a long run goes must not relabel the code the run loaded."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(PACKAGE_DIR), *args], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def run_record(
    *, config: str | None, parameters: int, epoch: int, seed: int, precision: str, device_type: str, processes: int
) -> dict[str, Any]:
    """The identity of a trained model, for ``config.json`` and test records."""
    return {
        "config": config,
        "parameters": parameters,
        "epochs": epoch,
        "seed": seed,
        "precision": precision,
        "device": device_name(device_type),
        "processes": processes,
        "commit": source_commit(),
        "charlm_version": charlm.__version__,
    }
